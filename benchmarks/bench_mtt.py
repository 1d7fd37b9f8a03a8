"""Benchmark trajectory matching: seconds per iteration and peak memory, and memory vs syn_steps.

One mtt iteration is one :func:`distilkit.methods.mtt.trajectory_matching_step` (unroll the student
``syn_steps`` steps on DSA-augmented minibatches of the synthetic set, normalised parameter distance,
gradient to images and lr) plus the two optimizer steps (negligible). Its cost and memory do not
depend on the expert's values, so the benchmark starts the student at a random ConvNet and matches
another random one; no experts are trained. The synthetic set is initialised from real images of
``--source`` (default the full Fashion-MNIST installed by the Debian package, REFERENCE.md §5).

Memory is measured two ways, each measurement in its own process so that its peak is its own:

- ``saved_mb``: the peak of bytes autograd holds saved for backward
  (``SavedTensorMeter`` in tests/meters.py), deterministic, which is the part of memory
  that grows with ``syn_steps`` in unrolled mode;
- ``peak_rss_growth_mb``: growth of the process's peak resident memory during the step on CPU, or
  ``torch.cuda.max_memory_allocated`` on a GPU.

    OMP_NUM_THREADS=1 python benchmarks/bench_mtt.py --source /usr/share/datasets/fashion-mnist
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the meter is a test instrument
    from meters import SavedTensorMeter

    from distilkit.data.dsa import DSA
    from distilkit.data.sources import SourceConfig, load_real
    from distilkit.methods._synthetic import initial_images
    from distilkit.methods.mtt import draw_plan, trajectory_matching_step
    from distilkit.models import create_model
    from distilkit.runtime import configure_process

    configure_process()  # the process settings of a distilkit command
    device = torch.device(args.device)
    real = load_real(SourceConfig(source=args.source))
    c, h, w = real.image_shape
    torch.manual_seed(0)
    net = create_model(args.model, c, real.num_classes, (h, w)).to(device)
    names = [n for n, _ in net.named_parameters()]
    start = [p.detach().clone() for p in net.parameters()]
    torch.manual_seed(1)
    target = [p.detach().clone() for p in create_model(args.model, c, real.num_classes, (h, w)).to(device).parameters()]
    images = initial_images(real, args.ipc, "real", torch.Generator().manual_seed(0)).to(device).requires_grad_(True)
    labels = torch.arange(real.num_classes).repeat_interleave(args.ipc).to(device)
    lr = torch.tensor(0.01, device=device, requires_grad=True)
    dsa = DSA()
    batch = args.batch_syn if 0 < args.batch_syn < images.shape[0] else images.shape[0]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_mb()
    meter = SavedTensorMeter()
    walls = []
    for it in range(args.iterations + 1):  # the first iteration warms up and is not timed
        plan = draw_plan(images.shape[0], batch, args.steps, dsa, torch.Generator().manual_seed(it))
        images.grad = lr.grad = None
        began = time.perf_counter()
        with meter.track():
            trajectory_matching_step(net, names, start, target, images, labels, None, lr, plan, dsa, args.memory)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if it:
            walls.append(time.perf_counter() - began)
    if device.type == "cuda":
        growth = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
    else:
        growth = peak_rss_mb() - baseline
    return {"part": args.part, "model": args.model, "ipc": args.ipc, "steps": args.steps, "batch_syn": batch,
            "memory": args.memory, "device": str(device), "s_per_iteration": sum(walls) / len(walls),
            "saved_mb": meter.peak / 2**20, "peak_rss_growth_mb": growth, "threads": torch.get_num_threads()}


def child(args: argparse.Namespace, **overrides) -> dict:
    cmd = [sys.executable, __file__, "--child"]
    for key, value in {**vars(args), **overrides}.items():
        if key in ("child", "out", "sweep"):
            continue
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"measurement failed: {done.stderr.strip().splitlines()[-1] if done.stderr else cmd}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30, help="syn_steps of part 1")
    parser.add_argument("--batch-syn", type=int, default=0, help="0 = the whole set")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--sweep", default="10,20,40,80", help="syn_steps of part 2")
    parser.add_argument("--memory", default="constant")
    parser.add_argument("--part", default="iteration")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="bench_mtt.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    rows = [child(args, memory=memory, part="iteration") for memory in ("constant", "unrolled")]
    for steps in (int(s) for s in args.sweep.split(",") if s):
        rows += [child(args, steps=steps, memory=memory, part="memory") for memory in ("constant", "unrolled")]
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"\n| mtt ({args.model}, IPC {args.ipc}, syn_steps {args.steps}, {rows[0]['device']}, "
          f"{rows[0]['threads']} thread(s)) | s/iteration | saved-for-backward peak MB | peak memory growth MB |")
    print("|---|---|---|---|")
    for r in rows[:2]:
        print(f"| {r['memory']} | {r['s_per_iteration']:.2f} | {r['saved_mb']:.1f} | {r['peak_rss_growth_mb']:.0f} |")
    print(f"\n| syn_steps ({args.model}, IPC {args.ipc}) | memory | s/iteration | saved-for-backward peak MB "
          "| peak memory growth MB |")
    print("|---|---|---|---|---|")
    for r in rows[2:]:
        print(f"| {r['steps']} | {r['memory']} | {r['s_per_iteration']:.2f} | {r['saved_mb']:.1f} | "
              f"{r['peak_rss_growth_mb']:.0f} |")


if __name__ == "__main__":
    main()
