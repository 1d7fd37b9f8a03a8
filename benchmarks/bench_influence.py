"""Benchmark exact leave-one-out influence: the N + 1 trainings vectorised vs one after another.

The study's setting: 100 distilled images (IPC 10), ConvNet-3 w128, 300 full-batch iterations,
101 trainings. ``sequential`` trains the models one after another with the standard training loop;
``vectorised`` trains ``--model-chunk`` of them at once as one grouped ConvNet (stacked parameters,
distilkit.audit._loo.stacked_convnet), ``vmap`` the same with ``torch.func.vmap(functional_call)``;
the audit's ``strategy: auto`` uses the first on CPUs and the second on GPUs.
Both are timed over ``--iterations`` iterations of ``--models`` models (each variant in its own
process, for its own peak RSS) and extrapolated to the whole computation (101 models x 300 steps).

    python benchmarks/bench_influence.py                          # ConvNet-3 w128, 100 images
    python benchmarks/bench_influence.py --model convnet-w16 --iterations 20
    python benchmarks/bench_influence.py --device cuda --models 101 --model-chunk 101 --iterations 20
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


def measure(args) -> dict:
    from distilkit.audit._loo import loo_test_losses
    from distilkit.audit._real_runs import STUDY_DISTILLED
    from distilkit.data.sources import SourceConfig, load_real
    from distilkit.models import create_model
    from distilkit.runtime import configure_process
    from distilkit.train import TrainConfig

    configure_process()  # the process settings of a distilkit command
    torch.set_num_threads(args.threads)
    real = load_real(SourceConfig(source=args.source))
    pick = real.sample_per_class(args.images // real.num_classes, torch.Generator().manual_seed(0)).reshape(-1)
    images, labels = real.batch(pick), real.train_labels[pick]
    test_images, test_labels = real.test_set()
    test_images, test_labels = test_images[:100], test_labels[:100]
    torch.manual_seed(0)
    model = create_model(args.model, images.shape[1], real.num_classes, tuple(images.shape[2:]))
    cfg = TrainConfig(**{**STUDY_DISTILLED, "iterations": args.iterations})
    cuda = torch.device(args.device).type == "cuda"
    strategy = "sequential" if args.variant == "sequential" else "vectorised"
    kwargs = {"strategy": strategy, "stacking": "vmap" if args.variant == "vmap" else "auto", "device": args.device}
    if cuda:  # warm-up: kernels, cuDNN autotuning and the allocator, not timed
        loo_test_losses(model, images, labels, test_images, test_labels,
                        TrainConfig(**{**STUDY_DISTILLED, "iterations": 1}), model_chunk=args.model_chunk,
                        models=list(range(args.models)), **kwargs)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loo_test_losses(model, images, labels, test_images, test_labels, cfg, model_chunk=args.model_chunk,
                    models=list(range(args.models)), **kwargs)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    per_model_step = seconds / (args.models * args.iterations)
    total = per_model_step * (images.shape[0] + 1) * args.full_iterations
    return {"variant": args.variant, "images": int(images.shape[0]), "model": args.model,
            "ms_per_model_step": 1000 * per_model_step, "extrapolated_total_s": total,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="embedded")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--models", type=int, default=16, help="models timed per variant")
    parser.add_argument("--model-chunk", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=2, help="iterations timed")
    parser.add_argument("--full-iterations", type=int, default=300, help="iterations extrapolated to")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the audit's auto strategy is vectorised there)")
    parser.add_argument("--out", default="bench/influence.json")
    parser.add_argument("--variants", default="sequential,vectorised,vmap")
    parser.add_argument("--variant", choices=["sequential", "vectorised", "vmap"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args)))
        return
    rows = []
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", variant]
        for flag in ("source", "model", "images", "models", "model_chunk", "iterations", "full_iterations", "threads",
                     "device"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    seq = rows[0]
    print(f"\n{seq['device']}: {args.model}, {seq['images']} images, {seq['images'] + 1} trainings x "
          f"{args.full_iterations} iterations")
    print("| variant | ms per model-step | extrapolated total | peak RSS MB | peak GPU MB |\n|---|---|---|---|---|")
    for r in rows:
        gpu = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
        print(f"| {r['variant']} | {r['ms_per_model_step']:.2f} | {r['extrapolated_total_s'] / 60:.2f} min | "
              f"{r['peak_rss_mb']:.0f} | {gpu} |")
    for r in rows[1:]:
        speedup = seq["ms_per_model_step"] / r["ms_per_model_step"]
        print(f"speed-up of {r['variant']} over {seq['variant']}: {speedup:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
