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

Uncertainty: every seed trains the distilled and the baseline runs from the same initialisation
seed and with the same real additions, so differences are paired by seed. The verdict follows from
a paired-seed bootstrap interval (:mod:`distilkit.audit._stats`) of the per-seed change from k = 0
averaged over the small k (0 < k ≤ 10): "holds" when the interval lies below 0, "does not hold"
when above, else (or with fewer than 3 seeds) "inconclusive at this budget". Per k, the interval of
distilled − random says where the curves meet: the first k whose interval is not wholly above 0.
"""

from __future__ import annotations

import statistics

import torch

from distilkit.audit._common import pyplot, save_figure, share
from distilkit.audit._registry import AuditContext, AuditResult, Table, register_audit
from distilkit.audit._stats import FAILS, HOLDS, describe, paired_test
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
    defaults={"ks": [0, 2, 10, 50, 250], "seeds": 5, "protocol": PAPER, "resamples": 2000},
    presets={"cpu": {"seeds": 3, "protocol": {**PAPER, "model": "convnet-w32", "batch_size": 256, "iterations": 150}},
             "smoke": {"ks": [0, 2], "seeds": 2, "protocol": {**PAPER, "model": "convnet-w8-d2", "iterations": 10}}},
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
    seeds, resamples = cfg["seeds"], int(cfg["resamples"])
    gaps = {k: paired_test(f"distilled + {k} above random + {k}", f"distilled − random accuracy, k = {k}",
                           [acc[("distilled", k)][s] - acc[("random", k)][s] for s in range(seeds)], +1,
                           seed=ctx.seed, resamples=resamples) for k in ks}
    small = [k for k in ks if 0 < k <= 10]
    dip_test = None
    if small:
        dip_test = paired_test("a little real data lowers accuracy",
                               f"mean change from k = 0 over k in {small}",
                               [statistics.fmean(acc[("distilled", k)][s] - acc[("distilled", 0)][s] for k in small)
                                for s in range(seeds)], -1, seed=ctx.seed, resamples=resamples)
    meet = next((k for k in ks if gaps[k]["ci"][0] <= 0), None)
    summary = {"distilled_only": round(mean[("distilled", 0)], 4), "random_only": round(mean[("random", 0)], 4),
               "curves_meet_at_k": meet, "ks": ks, "seeds": seeds}
    if dip_test is not None:
        summary |= {"small_k_change": dip_test["estimate"], "small_k_change_ci": dip_test["ci"],
                    "small_k_outcome": dip_test["outcome"]}
    for k in ks:
        summary[f"distilled_k{k}"] = round(mean[("distilled", k)], 4)
        summary[f"random_k{k}"] = round(mean[("random", k)], 4)
    rows = [[k, round(mean[("distilled", k)], 4), round(std[("distilled", k)], 4), round(mean[("random", k)], 4),
             round(std[("random", k)], 4), gaps[k]["estimate"], f"[{gaps[k]['ci'][0]:+.4f}, {gaps[k]['ci'][1]:+.4f}]"]
            for k in ks]
    series = {"ks": ks, "distilled_mean": [mean[("distilled", k)] for k in ks],
              "random_mean": [mean[("random", k)] for k in ks], "distilled_std": [std[("distilled", k)] for k in ks],
              "random_std": [std[("random", k)] for k in ks], "difference_ci": [gaps[k]["ci"] for k in ks]}

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
    if dip_test is None:
        verdict = "No k between 1 and 10 fits the smallest class, so the study's small-k claim is untested."
    else:
        said = {HOLDS: "as the study found", FAILS: "unlike the study's finding"}.get(dip_test["outcome"],
                                                                                   "so the study's finding is open")
        verdict = (f"Does a little real data (k ≤ 10 per class) lower the distilled set's accuracy? "
                   f"{describe(dip_test)} ({said}).")
    verdict += (f" The distilled advantage over random real data is no longer clear of 0 from k = {meet} on."
                if meet is not None else " The distilled curve stays clearly above the random one for every k tried.")
    table = Table(f"Test accuracy, {protocol.model}, {protocol.iterations} iterations, {seeds} seeds",
                  ["k real / class", "distilled + k", "std", "random + k", "std", "difference", "95% CI"], rows)
    tests = ([dip_test] if dip_test is not None else []) + [gaps[k] for k in ks]
    return AuditResult(summary=summary, verdict=verdict, tables=[table], figures=[figure], tests=tests, series=series)
