"""Distill, evaluate and inspect from Python (the same steps as the CLI quickstart).

    python examples/distill_and_evaluate.py --method dm --ipc 10 --preset cpu --out distilled/example
"""

from __future__ import annotations

import argparse

from distilkit import DistillConfig, DistilledSet, SourceConfig, distill, evaluate_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="embedded")
    parser.add_argument("--method", default="dm")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="distilled/example")
    args = parser.parse_args()

    cfg = DistillConfig(source=SourceConfig(source=args.source), method=args.method, ipc=args.ipc,
                        preset=args.preset, out=args.out)
    folder = distill(cfg, overwrite=True)
    results = evaluate_folder(folder, runs=args.runs, preset=args.preset)
    dset = DistilledSet.load(folder)
    print(f"{folder}: {tuple(dset.images.shape)} float32 images in the {dset.pixel_space.kind} pixel space")
    for r in results:
        print(f"  {r['model']}: {100 * r['mean']:.2f} ± {100 * r['std']:.2f} % over {r['runs']} runs")


if __name__ == "__main__":
    main()
