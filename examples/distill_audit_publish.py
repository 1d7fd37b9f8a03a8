"""Distill -> audit -> publish: a set folder whose card carries its evaluation and audit, pushed to a
Hugging Face Hub dataset repo when a repo id is given (the token: --token, HF_TOKEN or `hf auth login`).

    python examples/distill_audit_publish.py --out distilled/fmnist-dm-ipc10
    python examples/distill_audit_publish.py --out distilled/fmnist-dm-ipc10 --repo <user>/fmnist-dm --config-name ipc10
"""

from __future__ import annotations

import argparse

from distilkit import audit, distill, publish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="embedded", help="'embedded', a local folder or a Hub dataset id")
    parser.add_argument("--method", default="dm")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--preset", default="cpu", help="cpu (minutes on 2 cores) or smoke (seconds)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--audits", help="comma-separated audit names [all]")
    parser.add_argument("--out", required=True, help="the set folder to write")
    parser.add_argument("--repo", help="Hub dataset repo to publish to (nothing is published without it)")
    parser.add_argument("--config-name", default="default", help="the repo's config (several IPCs can share a repo)")
    parser.add_argument("--token", help="Hub token [HF_TOKEN, else the huggingface_hub login]")
    args = parser.parse_args()

    dset = distill(args.source, method=args.method, ipc=args.ipc, preset=args.preset)
    results = dset.evaluate(runs=args.runs, preset=args.preset)
    print(f"{dset.method} IPC {dset.ipc}: {100 * results[0]['mean']:.2f} % test accuracy ({args.runs} runs)")
    report = audit(dset, only=args.audits.split(",") if args.audits else None, preset=args.preset)
    dset.save(args.out)  # the card carries the evaluation ...
    report.save(args.out)  # ... and, merged in, the audit summaries, section, figures and report.json
    print(f"wrote {args.out} with {len(report.audits)} audit(s)")
    if not args.repo:
        print("not published: pass --repo <user>/<name> to push the folder to the Hub")
        return
    published = publish(args.out, args.repo, config_name=args.config_name, token=args.token)
    config = "" if args.config_name == "default" else f", {args.config_name!r}"
    print(f"published to {published.ref}; load it with datasets.load_dataset({args.repo!r}{config}, split='train')")


if __name__ == "__main__":
    main()
