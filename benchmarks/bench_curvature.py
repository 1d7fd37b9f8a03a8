"""Benchmark the curvature audit's Hutchinson trace: seconds per probe and per 100-probe estimate.

ConvNet-3 (w128 by default) at the source's image size; two image sets: 100 images (a distilled
set at IPC 10) and 2,560 real images. Three ways to evaluate the probes' Hessian-vector products:

- ``per-probe``: one probe per pass (forward + gradient graph rebuilt for every probe);
- ``loop``: ``--probe-batch`` probes share one forward and gradient graph per chunk, one double
  backward each;
- ``vmap``: the same probes in one vmapped double backward (``is_grads_batched``) per chunk.

Each (set, mode) runs ``--probes`` probes (tolerance 0) in its own process, so its peak RSS is its own.

    python benchmarks/bench_curvature.py                    # embedded Fashion-MNIST, ConvNet-3 w128
    python benchmarks/bench_curvature.py --model convnet-w32 --probes 8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

MODES = {"per-probe": (1, False), "loop": (None, False), "vmap": (None, True)}


def measure(args) -> dict:
    from distilkit.audit._hessian import hutchinson_trace, num_parameters
    from distilkit.data.sources import SourceConfig, load_real
    from distilkit.models import create_model

    torch.set_num_threads(args.threads)
    real = load_real(SourceConfig(source=args.source))
    per_class = args.images // real.num_classes
    pick = real.sample_per_class(per_class, torch.Generator().manual_seed(0)).reshape(-1)
    images, labels = real.batch(pick), real.train_labels[pick]
    torch.manual_seed(0)
    model = create_model(args.model, images.shape[1], real.num_classes, tuple(images.shape[2:]))
    probe_batch, batched = MODES[args.mode]
    probe_batch = probe_batch or args.probe_batch
    start = time.perf_counter()
    estimate = hutchinson_trace(model, images, labels, torch.Generator().manual_seed(1), max_probes=args.probes,
                                tol=0.0, probe_batch=probe_batch, chunk_size=args.chunk_size, batched=batched)
    seconds = time.perf_counter() - start
    return {"images": int(pick.numel()), "mode": args.mode, "probe_batch": probe_batch, "probes": estimate.probes,
            "s_per_probe": seconds / estimate.probes, "s_per_100_probe_estimate": 100 * seconds / estimate.probes,
            "trace": estimate.trace, "parameters": num_parameters(model),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="embedded")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--sets", default="100,2560", help="image counts (class-balanced real images)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--probe-batch", type=int, default=4)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="bench/curvature.json")
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args)))
        return

    rows = []
    for count in [int(x) for x in args.sets.split(",")]:
        for mode in args.modes.split(","):
            cmd = [sys.executable, __file__, "--mode", mode, "--images", str(count), "--source", args.source,
                   "--model", args.model, "--probes", str(args.probes), "--probe-batch", str(args.probe_batch),
                   "--chunk-size", str(args.chunk_size), "--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.model}, {rows[0]['parameters']} parameters, {args.probes} probes per measurement")
    print("| images | mode | s/probe | s per 100-probe trace | peak RSS MB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['images']} | {r['mode']} (batch {r['probe_batch']}) | {r['s_per_probe']:.3f} | "
              f"{r['s_per_100_probe_estimate']:.1f} | {r['peak_rss_mb']:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
