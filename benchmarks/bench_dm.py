"""Benchmark distribution matching: seconds per iteration and peak memory.

Three implementations, the same network weights, real batch and augmentation, and the convolutions
they share:

- ``reference``: the yardstick, DM as the reference implementation writes it: a per-class loop
  (per class: sample, augment, embed real then detach, embed synthetic) over a ConvNet built from
  plain PyTorch modules (``nn.Conv2d``, ``nn.GroupNorm``, ``nn.ReLU``, ``nn.AvgPool2d``) holding
  distilkit's weights, with the allocator's defaults;
- ``loop``: the same per-class loop over distilkit's ConvNet module (an ablation: what the loop
  gains from distilkit's network alone, e.g. its 2x2 pooling as one GEMM on CPUs and its folded
  first block on the real side, where nothing requires grad);
- ``floor`` (CPU only): not an implementation but the arithmetic they share: the convolutions alone
  (the real batch forward, the synthetic images forward and backward to their inputs), timed by
  benchmarks/conv_floor.py; ``reference / floor`` estimates the most any implementation that runs
  these layers with PyTorch's kernels can gain over the yardstick here;
- ``distilkit``: :func:`distilkit.methods.dm.matching_step` (all classes in shared chunked forward
  calls, no autograd on the real side, per-class DSA in one call) on distilkit's ConvNet.

Every worker first checks that its network's embedding equals distilkit's ConvNet's (allclose).
Each (variant, IPC) runs in its own process so the peak-memory figure is its own. Shared cloud
CPUs are noisy (the same call varies by 20-30 % from minute to minute), so the variants run in
``--rounds`` alternating rounds (reference, loop, distilkit, reference, ...) and the table gives
the median over every timed iteration of every round, with the minimum beside it.

    apt-get install -y dataset-fashion-mnist
    python benchmarks/bench_dm.py                           # IPC 1, 10, 50; batch_real 256; ConvNet-3 w128; 3 rounds
    python benchmarks/bench_dm.py --ipcs 10 --iterations 5 --real-chunk 0 --naive-tuned 1 --threads 1

On a machine with a GPU all variants run there (Accelerate picks the device; ACCELERATE_USE_CPU=1
keeps them on the CPU) and the table adds peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from conv_floor import conv_floor_seconds
from reference_loops import ReferenceConvNet, dm_per_class_loss

FMNIST = "/usr/share/datasets/fashion-mnist"
VARIANTS = ("reference", "loop", "distilkit", "floor")
IMPLEMENTATIONS = VARIANTS[:3]


def worker(args) -> dict:
    from distilkit.data.dsa import DSA
    from distilkit.data.sources import SourceConfig, load_real
    from distilkit.methods._synthetic import initial_images
    from distilkit.methods.dm import matching_step
    from distilkit.models import create_model
    from distilkit.runtime import configure_process, make_accelerator

    torch.set_num_threads(args.threads)
    if args.variant == "reference" and not args.naive_tuned:
        os.environ["DISTILKIT_TUNE_MALLOC"] = "0"  # the yardstick runs with the allocator's defaults
    configure_process()  # the process settings of a distilkit command
    acc = make_accelerator()
    real = load_real(SourceConfig(source=args.source))
    ipc, dsa = args.ipc, DSA()
    generator = torch.Generator().manual_seed(0)
    device = acc.device
    cuda = device.type == "cuda"
    images = initial_images(real, ipc, "real", generator).to(device).requires_grad_(True)
    syn_labels = torch.arange(real.num_classes).repeat_interleave(ipc)
    optimizer = torch.optim.SGD([images], lr=1.0, momentum=0.5)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for it in range(args.warmup + args.iterations):
        start = time.perf_counter()
        torch.manual_seed(it)
        net = create_model(args.model, images.shape[1], real.num_classes, tuple(images.shape[2:]))
        net.to(device).requires_grad_(False)
        if it == 0:
            with torch.no_grad():
                probe = images[: min(8, images.shape[0])]
                torch.testing.assert_close(ReferenceConvNet(net).embed(probe), net.embed(probe), rtol=1e-4, atol=1e-5)
        indices = real.sample_per_class(args.batch_real, generator)
        params = dsa.sample(real.num_classes, generator)
        optimizer.zero_grad()
        if args.variant == "floor":
            shape = tuple(images.shape[1:])
            floor = (conv_floor_seconds(net, shape, real.num_classes * args.batch_real, False, False)
                     + conv_floor_seconds(net, shape, images.shape[0], False, True, first_input_grad=True))
            if it >= args.warmup:
                times.append(floor)
            continue
        if args.variant == "distilkit":
            matching_step(net, real, indices, images, syn_labels, dsa, params, acc, args.batch_real,
                          args.real_chunk, args.syn_chunk)
        else:
            looped = ReferenceConvNet(net) if args.variant == "reference" else net
            real_by_class = [real.batch(row).to(device) for row in indices]
            dm_per_class_loss(looped, real_by_class, images, ipc, dsa, params).backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        if it >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": args.variant, "ipc": ipc, "times": times, "peak_rss_mb": peak / 1024,
            "peak_rss_growth_mb": (peak - baseline) / 1024, "iterations": len(times),
            "num_train": int(real.train_images.shape[0]), "device": torch.cuda.get_device_name() if cuda else "cpu",
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def _summary(ipc: int, variant: str, runs: list[dict]) -> dict:
    """One table cell from every round of a (variant, IPC): the median and minimum over all timed
    iterations, the largest peak memory."""
    times = [t for run in runs for t in run["times"]]
    gpu = [run["peak_gpu_mb"] for run in runs if run.get("peak_gpu_mb") is not None]
    return {"variant": variant, "ipc": ipc, "s_per_iteration": statistics.median(times),
            "s_per_iteration_min": min(times), "timed_iterations": len(times),
            "peak_rss_mb": max(run["peak_rss_mb"] for run in runs), "peak_gpu_mb": max(gpu) if gpu else None}


def _gpu(row: dict) -> str:
    return f"{row['peak_gpu_mb']:.0f}" if row.get("peak_gpu_mb") is not None else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=FMNIST)
    parser.add_argument("--ipcs", default="1,10,50")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of all variants per IPC")
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--real-chunk", default="auto", help="distilkit: real images per forward (0 = all)")
    parser.add_argument("--syn-chunk", default="auto", help="distilkit: synthetic images per pass (0 = all)")
    parser.add_argument("--naive-tuned", type=int, default=0, help="give the reference loop the tuned allocator too")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="bench/dm.json")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--ipc", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(worker(args)))
        return

    runs = []
    for ipc in [int(x) for x in args.ipcs.split(",")]:
        for round_index in range(args.rounds):
            for variant in args.variants.split(","):
                cmd = [sys.executable, __file__, "--variant", variant, "--ipc", str(ipc)]
                for flag in ("source", "iterations", "warmup", "batch_real", "model", "real_chunk", "syn_chunk",
                             "naive_tuned", "threads"):
                    cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs.append({**json.loads(done.stdout.strip().splitlines()[-1]), "round": round_index})
                print(json.dumps(runs[-1]), flush=True)
    rows = [_summary(ipc, variant, [r for r in runs if (r["ipc"], r["variant"]) == (ipc, variant)])
            for ipc in sorted({r["ipc"] for r in runs}) for variant in VARIANTS
            if any((r["ipc"], r["variant"]) == (ipc, variant) for r in runs)]
    print(f"\n{runs[0]['device']}, {args.threads} thread(s), {args.rounds} round(s) x {args.iterations} iteration(s)")
    print("| IPC | reference loop s/it | loop on distilkit's ConvNet s/it | distilkit s/it | speed-up vs reference "
          "| vs loop | conv floor s/it | reference / floor | peak RSS MB (reference / loop / distilkit) "
          "| peak GPU MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ipc in sorted({r["ipc"] for r in rows}):
        by = {r["variant"]: r for r in rows if r["ipc"] == ipc}
        cell = {v: f"{by[v]['s_per_iteration']:.3g} (min {by[v]['s_per_iteration_min']:.3g})" if v in by else "-"
                for v in VARIANTS}
        ours = by.get("distilkit")

        def ratio(v: str, by=by, ours=ours) -> str:
            return f"{by[v]['s_per_iteration'] / ours['s_per_iteration']:.2f}x" if ours and v in by else "-"

        rss = " / ".join(f"{by[v]['peak_rss_mb']:.0f}" if v in by else "-" for v in IMPLEMENTATIONS)
        gpu = " / ".join(_gpu(by[v]) for v in IMPLEMENTATIONS if v in by)
        bound = (f"{by['reference']['s_per_iteration'] / by['floor']['s_per_iteration']:.2f}x"
                 if "reference" in by and "floor" in by else "-")
        print(f"| {ipc} | {cell['reference']} | {cell['loop']} | {cell['distilkit']} | {ratio('reference')} | "
              f"{ratio('loop')} | {cell['floor']} | {bound} | {rss} | {gpu} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
