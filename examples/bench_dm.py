"""Benchmark distribution matching: seconds per iteration and peak memory.

Compares distilkit's DM iteration (one batched forward over all classes, no autograd on the real
side, per-class DSA in one call) with a straightforward per-class loop in the style of the reference
implementation (per class: sample, augment, embed real with autograd then detach, embed synthetic),
with the same network, batch and augmentation. Each (variant, IPC) runs in its own process so the
peak-memory figure is its own.

    apt-get install -y dataset-fashion-mnist
    python examples/bench_dm.py                           # IPC 1, 10, 50; batch_real 256; ConvNet-3 w128
    python examples/bench_dm.py --ipcs 10 --iterations 5 --real-chunk 0 --naive-tuned 1

On a machine with a GPU both variants run there (Accelerate picks the device; ACCELERATE_USE_CPU=1
keeps them on the CPU) and the table adds peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

FMNIST = "/usr/share/datasets/fashion-mnist"


def naive_loss(net, real, images, ipc, dsa, generator, batch_real):
    loss = torch.zeros(())
    for c in range(real.num_classes):
        pool = real.class_indices(c)
        idx = pool[torch.randperm(len(pool), generator=generator)[:batch_real]]
        params = dsa.sample(1, generator)
        zeros_real, zeros_syn = torch.zeros(len(idx), dtype=torch.long), torch.zeros(ipc, dtype=torch.long)
        out_real = net.embed(dsa(real.batch(idx).to(images.device), params, zeros_real)).detach()
        out_syn = net.embed(dsa(images[c * ipc : (c + 1) * ipc], params, zeros_syn))
        loss = loss + ((out_real.mean(0) - out_syn.mean(0)) ** 2).sum()
    return loss


def worker(args) -> dict:
    from distilkit.data.dsa import DSA
    from distilkit.data.sources import SourceConfig, load_real
    from distilkit.methods.dm import matching_step
    from distilkit.methods.synthetic import initial_images
    from distilkit.models import create_model
    from distilkit.runtime import make_accelerator

    torch.set_num_threads(args.threads)
    if args.variant == "naive" and not args.naive_tuned:
        os.environ["DISTILKIT_TUNE_MALLOC"] = "0"  # the yardstick runs with the allocator's defaults
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
        if args.variant == "distilkit":
            indices = real.sample_per_class(args.batch_real, generator)
            params = dsa.sample(real.num_classes, generator)
            optimizer.zero_grad()
            matching_step(net, real, indices, images, syn_labels, dsa, params, acc, args.batch_real,
                          args.real_chunk, args.syn_chunk)
        else:
            loss = naive_loss(net, real, images, ipc, dsa, generator, args.batch_real)
            optimizer.zero_grad()
            loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        if it >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": args.variant, "ipc": ipc, "s_per_iteration": sum(times) / len(times),
            "s_per_iteration_min": min(times), "peak_rss_mb": peak / 1024,
            "peak_rss_growth_mb": (peak - baseline) / 1024, "iterations": len(times),
            "num_train": int(real.train_images.shape[0]), "device": torch.cuda.get_device_name() if cuda else "cpu",
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def _gpu(row: dict) -> str:
    return f"{row['peak_gpu_mb']:.0f}" if row.get("peak_gpu_mb") is not None else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=FMNIST)
    parser.add_argument("--ipcs", default="1,10,50")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--real-chunk", default="auto", help="distilkit: real images per forward (0 = all)")
    parser.add_argument("--syn-chunk", default="auto", help="distilkit: synthetic images per pass (0 = all)")
    parser.add_argument("--naive-tuned", type=int, default=0, help="give the per-class loop the tuned allocator too")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="bench/dm.json")
    parser.add_argument("--variant", choices=["distilkit", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--ipc", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(worker(args)))
        return

    rows = []
    for ipc in [int(x) for x in args.ipcs.split(",")]:
        for variant in ("naive", "distilkit"):
            cmd = [sys.executable, __file__, "--variant", variant, "--ipc", str(ipc)]
            for flag in ("source", "iterations", "warmup", "batch_real", "model", "real_chunk", "syn_chunk",
                         "naive_tuned", "threads"):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{rows[0]['device']}")
    print("| IPC | per-class loop s/it | distilkit s/it | speed-up | loop peak RSS MB | distilkit peak RSS MB |"
          " loop / distilkit peak GPU MB |")
    print("|---|---|---|---|---|---|---|")
    for ipc in sorted({r["ipc"] for r in rows}):
        naive = next(r for r in rows if r["ipc"] == ipc and r["variant"] == "naive")
        ours = next(r for r in rows if r["ipc"] == ipc and r["variant"] == "distilkit")
        print(f"| {ipc} | {naive['s_per_iteration']:.3g} | {ours['s_per_iteration']:.3g} | "
              f"{naive['s_per_iteration'] / ours['s_per_iteration']:.2f}x | {naive['peak_rss_mb']:.0f} | "
              f"{ours['peak_rss_mb']:.0f} | {_gpu(naive)} / {_gpu(ours)} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
