"""Q1 ``mixing``: does adding a little real data help a distilled set?

For each k in ``ks``: train on the distilled set plus k real images per class, and, as the baseline,
on IPC random real images per class plus the same k. Real additions are nested (the k=10 images
contain the k=2 ones) and seeded; k is capped by what the smallest class has left. The study found
that a little real data *lowers* accuracy, and that the curves meet only at k=250. The distilled arm
trains with the audit run's labels and lr (``--labels``, ``--learned-lr``; by default hard labels and
lr 0.01, as the study did); real images always bring their hard labels. Seed s draws
its real images and its model from its own streams; within a seed both arms and every k share the
model's initialisation and data order (a paired design, :mod:`distilkit.seeding`). Training uses
the same protocol for both arms.
"""

from __future__ import annotations

import statistics

import torch

from distilkit.audit.common import pyplot, save_figure, share
from distilkit.audit.registry import AuditContext, AuditResult, Table, register_audit
from distilkit.data.real import RealData
from distilkit.distilled import DistilledSet
from distilkit.seeding import derive_seed
from distilkit.seeding import generator as seed_generator
from distilkit.train import TrainConfig, train_and_test

PAPER = {"model": "convnet", "iterations": 300, "batch_size": None, "lr": 0.01, "momentum": 0.9,
         "weight_decay": 0.0, "lr_schedule": "constant", "dsa": False}


@register_audit(
    "mixing", question=1, summary="distilled + k real images per class vs random real + k",
    distributed=True,
    defaults={"ks": [0, 2, 10, 50, 250], "seeds": 3, "protocol": PAPER},
    presets={"cpu": {"seeds": 2, "protocol": {**PAPER, "model": "convnet-w32", "batch_size": 256, "iterations": 150}},
             "smoke": {"ks": [0, 2], "seeds": 1, "protocol": {**PAPER, "model": "convnet-w8-d2", "iterations": 10}}},
)
def audit_mixing(dset: DistilledSet, real: RealData, cfg: dict, ctx: AuditContext) -> AuditResult:
    protocol = TrainConfig(**cfg["protocol"])
    room = int(real.class_counts.min()) - dset.ipc
    ks = sorted({min(k, room) for k in cfg["ks"] if room >= 0})
    test_images, test_labels = real.test_set()
    num_classes = dset.num_classes
    draws = [real.sample_per_class(dset.ipc + ks[-1], seed_generator("mixing-draw", ctx.seed, seed))
             for seed in range(cfg["seeds"])]
    jobs = [(seed, k, name) for seed in range(cfg["seeds"]) for k in ks for name in ("distilled", "random")]
    targets, lr = ctx.distilled_targets(dset), ctx.distilled_lr(dset)

    def real_targets(idx: torch.Tensor) -> torch.Tensor:  # one-hot rows beside soft distilled labels
        y = real.train_labels[idx]
        return y if targets.dtype == torch.long else torch.nn.functional.one_hot(y, num_classes).float()

    def run(job: tuple[int, int, str]) -> float:
        seed, k, name = job
        drawn = draws[seed]
        extra = drawn[:, dset.ipc : dset.ipc + k].reshape(-1)
        base = drawn[:, : dset.ipc].reshape(-1)
        x, y = (dset.images, targets) if name == "distilled" else (real.batch(base), real_targets(base))
        return train_and_test(torch.cat([x, real.batch(extra)]), torch.cat([y, real_targets(extra)]),
                              test_images, test_labels, num_classes, protocol,
                              seed=derive_seed("mixing", ctx.seed, seed), lr=lr if name == "distilled" else None,
                              device=ctx.device)

    results = share(ctx.accelerator, jobs, run, "mixing")
    if not ctx.accelerator.is_main_process:  # the trainings are shared; the main process reports
        return AuditResult(summary={}, verdict="")
    acc = {("distilled", k): [] for k in ks} | {("random", k): [] for k in ks}
    for (_, k, name), value in zip(jobs, results, strict=True):
        acc[(name, k)].append(value)
    mean = {key: statistics.fmean(v) for key, v in acc.items()}
    std = {key: statistics.pstdev(v) for key, v in acc.items()}
    rows = [[k, round(mean[("distilled", k)], 4), round(std[("distilled", k)], 4), round(mean[("random", k)], 4),
             round(std[("random", k)], 4)] for k in ks]
    small = [k for k in ks if 0 < k <= 10]
    dip = min((mean[("distilled", k)] - mean[("distilled", 0)] for k in small), default=0.0)
    meet = next((k for k in ks if mean[("distilled", k)] - mean[("random", k)] <= 0.01), None)
    summary = {"distilled_only": round(mean[("distilled", 0)], 4), "random_only": round(mean[("random", 0)], 4),
               "largest_dip_small_k": round(dip, 4), "curves_meet_at_k": meet, "ks": ks, "seeds": cfg["seeds"]}
    for k in ks:
        summary[f"distilled_k{k}"] = round(mean[("distilled", k)], 4)
        summary[f"random_k{k}"] = round(mean[("random", k)], 4)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = list(range(len(ks)))
    for name, label in (("distilled", f"{dset.method} set + k real"), ("random", f"{dset.ipc} random real + k real")):
        ax.errorbar(xs, [mean[(name, k)] for k in ks], yerr=[std[(name, k)] for k in ks], marker="o", capsize=3,
                    label=label)
    ax.set_xticks(xs, [str(k) for k in ks])
    ax.set_xlabel("k real images added per class")
    ax.set_ylabel("real test accuracy")
    ax.legend(fontsize=8)
    figure = save_figure(fig, ctx.out_dir, "mixing_curve.png")
    if dip < -0.005:
        verdict = (f"Adding a few real images per class lowers accuracy (largest drop {100 * dip:.1f} points "
                   "at k ≤ 10), as the study found.")
    else:
        verdict = (f"Adding a few real images per class does not lower accuracy here (change {100 * dip:+.1f} "
                   "points at k ≤ 10), unlike the study's finding.")
    verdict += (f" The distilled and random curves meet (within 1 point) at k = {meet}." if meet is not None
                else " The distilled curve stays above the random one for every k tried.")
    table = Table(f"Test accuracy, {protocol.model}, {protocol.iterations} iterations, {cfg['seeds']} seeds",
                  ["k real / class", "distilled + k", "std", "random + k", "std"], rows)
    return AuditResult(summary=summary, verdict=verdict, tables=[table], figures=[figure])
