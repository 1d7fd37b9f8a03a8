"""The Python API end to end, without the command line: distill, evaluate and audit in memory, then
save the set with its audit and load it back.

    python examples/python_api.py                      # embedded Fashion-MNIST, dm, IPC 10, cpu preset
    python examples/python_api.py --preset smoke       # seconds: tiny networks, a few steps
"""

from __future__ import annotations

import argparse

from distilkit import audit, distill, load_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="dm")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--preset", default="cpu", help="cpu (minutes on 2 cores) or smoke (seconds)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--audits", default="pixels,recognition", help="comma-separated audit names")
    parser.add_argument("--out", default="distilled/python-api")
    args = parser.parse_args()

    # A DistilledSet in memory: float32 images in its pixel space, labels, provenance. Nothing is written.
    dset = distill("embedded", method=args.method, ipc=args.ipc, preset=args.preset)
    print(f"distilled {tuple(dset.images.shape)} float32 images ({dset.pixel_space.kind} pixel space) "
          f"in {dset.provenance['wall_time_s']} s")

    # Fresh models trained on the set, tested on the real test split; recorded in dset.evaluation.
    for r in dset.evaluate(runs=args.runs, preset=args.preset):
        print(f"  {r['model']}: {100 * r['mean']:.2f} ± {100 * r['std']:.2f} % test accuracy over {r['runs']} runs")

    # The study's analyses, as an AuditReport: summaries, verdicts, PNG figures, a Markdown section.
    report = audit(dset, only=args.audits.split(","), preset=args.preset)
    for name, verdict in report.verdicts.items():
        print(f"  [{name}] {verdict}")

    # A Hub-layout folder (parquet + card + preview); the report goes into it (audit/ and the card).
    dset.save(args.out)
    report.save(args.out)
    again = load_set(args.out)
    print(f"saved {args.out}: {again.method} IPC {again.ipc}, {len(again.evaluation)} evaluation(s), "
          f"audits {', '.join(again.card_extra.get('audits', {}))}")


if __name__ == "__main__":
    main()
