"""Compare distilled sets of one source as the study does: distill a few methods, then overlay their
mixing curves, agreement distributions, early-recognition curves and Hessian traces in one report.

    python examples/compare.py                                   # dm vs random, IPC 10, cpu preset
    python examples/compare.py --methods dm,dc,random --preset smoke --out comparison
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distilkit import compare_sets, distill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="dm,random", help="comma-separated methods, at least two")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--preset", default="cpu", help="cpu or smoke (seconds)")
    parser.add_argument("--out", default="comparison", help="the comparison folder; the sets go to OUT/sets/")
    args = parser.parse_args()

    out = Path(args.out)
    folders = []
    for method in args.methods.split(","):
        folder = out / "sets" / f"{method}-ipc{args.ipc}"
        if not folder.is_dir():  # a set distilled by an earlier run is reused, with its cached audits
            distill("embedded", method=method, ipc=args.ipc, preset=args.preset).save(folder)
        folders.append(folder)
    comparison = compare_sets(folders, out, preset=args.preset)
    for row in comparison["rows"]:
        print(f"{row['set']}: distilled only {row['distilled_only']:.3f}, random only {row['random_only']:.3f}, "
              f"agreement early {row['agreement_early']:.3f} / subset {row['agreement_subset']:.3f}")
    print(f"figures and the summary table: {out}/README.md")


if __name__ == "__main__":
    main()
