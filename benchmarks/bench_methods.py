"""Benchmark the learned-set methods: seconds per iteration and peak memory, and BPTT memory vs T.

Part 1 runs ``dm``, ``dc``, ``dsa``, ``cafe``, ``krr`` (FRePo and random-features kernels) and ``bptt`` for a few
iterations each with their resolved preset (default ``cpu``) and reports s/iteration (wall time of
the run / iterations, setup included) and the peak resident memory of the process. With
``--before-after`` each method also runs *before* distilkit's two CPU-wide fixes, as measured by
profiling every method's iteration on a 2-core CPU: the allocator left at glibc's defaults
(``DISTILKIT_TUNE_MALLOC=0``; every large activation buffer a fresh ``mmap`` that page-faults) and
2x2 average pooling by PyTorch's NCHW ``avg_pool2d`` kernel instead of distilkit's pooling (strided sums, GEMM backward)
(:func:`distilkit.models.fast_cpu.avg_pool2x2`); the table gives both and the speed-up. (``mtt`` is
left out: its first run trains experts; benchmarks/bench_mtt.py measures it.) Part 2 runs one
BPTT outer step (unroll ``T`` inner steps, backpropagate the real loss) for several ``T``, without
checkpointing and with ``checkpoint_segment = ceil(sqrt(T))``, and reports the peak memory growth
of that step. Every measurement runs in its own process so that the peak is its own.

    python benchmarks/bench_methods.py                                   # embedded data, cpu preset, IPC 10
    python benchmarks/bench_methods.py --methods bptt --steps 10,20,40,80,160 --ipc 10
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

VARIANTS = {"dm": ("dm", {}), "dc": ("dc", {}), "dsa": ("dsa", {}), "cafe": ("cafe", {}),
            "krr-frepo": ("krr", {"kernel": "frepo"}), "krr-rf": ("krr", {"kernel": "random-features"}),
            "bptt": ("bptt", {})}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def method_worker(args) -> dict:
    from distilkit.data.sources import SourceConfig, load_real
    from distilkit.methods import RunContext, get_method
    from distilkit.models import fast_cpu
    from distilkit.runtime import configure_process, make_accelerator

    if args.before:
        os.environ["DISTILKIT_TUNE_MALLOC"] = "0"
        fast_cpu.avg_pool2x2 = lambda x: torch.nn.functional.avg_pool2d(x, 2)
    configure_process()  # the process settings of a distilkit command
    acc = make_accelerator()
    real = load_real(SourceConfig(source=args.source))
    name, extra = VARIANTS[args.variant]
    spec = get_method(name)
    overrides = {**extra, "iterations": args.iterations, **json.loads(args.overrides)}
    cfg = spec.resolve(args.preset, args.ipc, overrides)
    baseline = peak_mb()
    start = time.perf_counter()
    spec.fn(real, args.ipc, cfg, RunContext(acc, 0))
    wall = time.perf_counter() - start
    return {"part": "methods", "variant": args.variant, "before": bool(args.before), "ipc": args.ipc,
            "preset": args.preset, "threads": torch.get_num_threads(),
            "iterations": args.iterations, "s_per_iteration": wall / args.iterations, "peak_rss_mb": peak_mb(),
            "peak_rss_growth_mb": peak_mb() - baseline, "model": cfg["model"]}


def bptt_worker(args) -> dict:
    from distilkit.data.sources import SourceConfig, load_real
    from distilkit.methods._synthetic import initial_images
    from distilkit.methods.bptt import unrolled_backward
    from distilkit.models import create_model

    real = load_real(SourceConfig(source=args.source))
    generator = torch.Generator().manual_seed(0)
    images = initial_images(real, args.ipc, "real", generator).requires_grad_(True)
    logits = torch.zeros(images.shape[0], real.num_classes, requires_grad=True)
    log_lr = torch.tensor(math.log(0.01), requires_grad=True)
    indices = real.sample_per_class(args.batch_real, generator).reshape(-1)
    x_real, y_real = real.batch(indices), real.train_labels[indices]
    torch.manual_seed(0)
    net = create_model(args.model, images.shape[1], real.num_classes, tuple(images.shape[2:]))
    baseline = peak_mb()
    start = time.perf_counter()
    unrolled_backward(net, images, torch.softmax(logits, 1), log_lr, x_real, y_real, args.steps, 0, args.segment,
                      0.9)
    wall = time.perf_counter() - start
    return {"part": "bptt_memory", "steps": args.steps, "segment": args.segment, "ipc": args.ipc,
            "model": args.model, "s_per_outer_step": wall, "peak_rss_mb": peak_mb(),
            "peak_rss_growth_mb": peak_mb() - baseline}


def run_worker(flags: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"worker {' '.join(flags)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="embedded")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--methods", default="dm,dc,dsa,cafe,krr-frepo,krr-rf,bptt")
    parser.add_argument("--before-after", action="store_true", dest="before_after",
                        help="also run each method without distilkit's CPU fixes (allocator, pooling)")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--overrides", default="{}", help="JSON method options applied to every method")
    parser.add_argument("--steps", default="5,10,20,40", help="BPTT unroll lengths T for part 2 ('' skips it)")
    parser.add_argument("--model", default="convnet-w32", help="part 2 model")
    parser.add_argument("--batch-real", type=int, default=16, help="part 2 real images per class")
    parser.add_argument("--out", default="bench/methods.json")
    parser.add_argument("--worker", choices=["method", "bptt"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--before", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--segment", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--steps-one", type=int, dest="steps_one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "method":
        print(json.dumps(method_worker(args)))
        return
    if args.worker == "bptt":
        args.steps = args.steps_one
        print(json.dumps(bptt_worker(args)))
        return

    common = ["--source", args.source, "--ipc", str(args.ipc)]
    rows = []
    for variant in [m for m in args.methods.split(",") if m]:
        for before in (1, 0) if args.before_after else (0,):
            rows.append(run_worker(["--worker", "method", "--variant", variant, "--preset", args.preset,
                                    "--iterations", str(args.iterations), "--overrides", args.overrides,
                                    "--before", str(before), *common]))
            print(json.dumps(rows[-1]), flush=True)
    for steps in [int(s) for s in args.steps.split(",") if s]:
        for segment in (0, math.ceil(math.sqrt(steps))):
            rows.append(run_worker(["--worker", "bptt", "--steps-one", str(steps), "--segment", str(segment),
                                    "--model", args.model, "--batch-real", str(args.batch_real), *common]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| method ({args.preset} preset, IPC {args.ipc}) | s/iteration before | s/iteration | speed-up "
          "| peak RSS MB | growth MB |")
    print("|---|---|---|---|---|---|")
    methods = [r for r in rows if r["part"] == "methods"]
    before = {r["variant"]: r["s_per_iteration"] for r in methods if r["before"]}
    for r in (r for r in methods if not r["before"]):
        old = before.get(r["variant"])
        cells = (f"{old:.2f}", f"{old / r['s_per_iteration']:.2f}x") if old else ("-", "-")
        print(f"| {r['variant']} | {cells[0]} | {r['s_per_iteration']:.2f} | {cells[1]} | {r['peak_rss_mb']:.0f} | "
              f"{r['peak_rss_growth_mb']:.0f} |")
    print(f"\n| BPTT T ({args.model}, IPC {args.ipc}) | segment | s/outer step | peak RSS growth MB |")
    print("|---|---|---|---|")
    for r in (r for r in rows if r["part"] == "bptt_memory"):
        label = "none" if r["segment"] == 0 else str(r["segment"])
        print(f"| {r['steps']} | {label} | {r['s_per_outer_step']:.2f} | {r['peak_rss_growth_mb']:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
