"""Q1 ``sensitivity``: does the distilled set only work in the setup it was distilled for?

Trains on the distilled set under a grid of training setups, each changing one factor of the base
protocol (optimizer, learning rate, iterations, full batch vs minibatch, DSA, architecture), and
does the same for a random real subset of equal size. Reported per set: accuracy under the base
setup, min / median / max over the grid and the largest relative drop from the base. The study's
claim is that distilled data is more sensitive to the training setup than real data. The ``paper``
preset uses the study's protocol and a timm ResNet-18; the ``cpu`` preset halves the iterations and
swaps the architecture for a BatchNorm/max-pool ConvNet, because a ResNet-18 step takes seconds on
two cores.

Uncertainty: seed s draws its own random real subset and trains the distilled and the random runs
of every setup from the same initialisation seed, so per seed the mean relative accuracy loss over
the non-standard setups (distilled minus random) is a paired difference. Its paired-seed bootstrap
interval (:mod:`distilkit.audit._stats`) gives the verdict: "holds" (distilled data is more
sensitive) when the interval lies above 0, "does not hold" when below, otherwise — or with fewer
than 3 seeds — "inconclusive at this budget".
"""

from __future__ import annotations

import dataclasses
import statistics

import torch

from distilkit.audit._common import pyplot, save_figure, share
from distilkit.audit._registry import AuditContext, AuditResult, Table, register_audit
from distilkit.audit._stats import describe, paired_test
from distilkit.data.real import RealData
from distilkit.distilled import DistilledSet
from distilkit.seeding import derive_seed
from distilkit.seeding import generator as seed_generator
from distilkit.train import TrainConfig, train_and_test

BASE = {"model": "convnet", "iterations": 300, "batch_size": None, "lr": 0.01, "momentum": 0.9,
        "weight_decay": 0.0, "lr_schedule": "constant", "dsa": False}


def setups(base: TrainConfig, arch: str, minibatch: int) -> dict[str, tuple[TrainConfig, str]]:
    """One-factor-at-a-time variations of ``base``: name -> (protocol, optimizer)."""
    r = dataclasses.replace
    return {
        "standard": (base, "sgd"),
        "adam lr 1e-3": (r(base, lr=1e-3), "adam"),
        "lr x0.1": (r(base, lr=base.lr * 0.1), "sgd"),
        "lr x10": (r(base, lr=base.lr * 10), "sgd"),
        "iterations x0.2": (r(base, iterations=max(1, base.iterations // 5)), "sgd"),
        "iterations x3": (r(base, iterations=base.iterations * 3), "sgd"),
        f"minibatch {minibatch}": (r(base, batch_size=minibatch), "sgd"),
        "DSA on": (r(base, dsa=True), "sgd"),
        arch: (r(base, model=arch), "sgd"),
    }


@register_audit(
    "sensitivity", question=1, summary="accuracy spread over training setups, distilled vs random real",
    distributed=True,
    defaults={"protocol": BASE, "architecture": "timm/resnet18", "minibatch": 32, "seeds": 5, "resamples": 2000},
    presets={"cpu": {"protocol": {**BASE, "model": "convnet-w32", "iterations": 150},
                     "architecture": "convnet-w32-bn-mp", "seeds": 3},
             "smoke": {"protocol": {**BASE, "model": "convnet-w8-d2", "iterations": 5},
                       "architecture": "convnet-w8-d2-bn", "seeds": 1}},
)
def audit_sensitivity(dset: DistilledSet, real: RealData, cfg: dict, ctx: AuditContext) -> AuditResult:
    base = TrainConfig(**cfg["protocol"])
    grid = setups(base, cfg["architecture"], cfg["minibatch"])
    test_images, test_labels = real.test_set()
    picks = [real.sample_per_class(dset.ipc, seed_generator("sensitivity-random-subset", ctx.seed, s)).reshape(-1)
             for s in range(cfg["seeds"])]
    distilled = (dset.images, ctx.distilled_targets(dset))
    learned = ctx.distilled_lr(dset)  # with --learned-lr: the distilled arm's SGD setups scale the learned lr
    names = ("distilled", "random")
    jobs = [(setup, name, s) for setup in grid for name in names for s in range(cfg["seeds"])]

    def run(job: tuple[str, str, int]) -> float:
        setup, name, s = job
        protocol, optimizer = grid[setup]
        pick = picks[s]
        x, y = distilled if name == "distilled" else (real.batch(pick), real.train_labels[pick])
        lr = learned * protocol.lr / base.lr if learned and name == "distilled" and optimizer == "sgd" else None
        return train_and_test(x, y, test_images, test_labels, dset.num_classes, protocol, lr=lr,
                              seed=derive_seed("sensitivity", ctx.seed, s), device=ctx.device, optimizer=optimizer)

    results = share(ctx.accelerator, jobs, run, "sensitivity")
    if not ctx.accelerator.is_main_process:  # the trainings are shared; the main process reports
        return AuditResult(summary={}, verdict="")
    runs: dict[tuple[str, str], list[float]] = {}
    for (setup, name, _), value in zip(jobs, results, strict=True):
        runs.setdefault((name, setup), []).append(value)
    acc = {key: statistics.fmean(values) for key, values in runs.items()}
    summary: dict = {"setups": len(grid), "seeds": cfg["seeds"]}
    for name in names:
        values = [acc[(name, s)] for s in grid]
        standard = acc[(name, "standard")]
        drop = (standard - min(values)) / max(standard, 1e-8)
        summary.update({f"{name}/standard": round(standard, 4), f"{name}/min": round(min(values), 4),
                        f"{name}/median": round(statistics.median(values), 4), f"{name}/max": round(max(values), 4),
                        f"{name}/largest_relative_drop": round(drop, 4)})
    ratio = summary["distilled/largest_relative_drop"] / max(summary["random/largest_relative_drop"], 1e-8)
    summary["drop_ratio_distilled_vs_random"] = round(ratio, 3)
    rows = [[s, round(acc[("distilled", s)], 4), round(acc[("random", s)], 4)] for s in grid]
    varied = [s for s in grid if s != "standard"]

    def mean_loss(name: str, s: int) -> float:
        standard = max(runs[(name, "standard")][s], 1e-8)
        return statistics.fmean((standard - runs[(name, setup)][s]) / standard for setup in varied)

    test = paired_test("distilled data is more sensitive to the training setup than real data",
                       "mean relative accuracy loss off the standard setup, distilled − random",
                       [mean_loss("distilled", s) - mean_loss("random", s) for s in range(cfg["seeds"])], +1,
                       seed=ctx.seed, resamples=int(cfg["resamples"]))
    summary |= {"mean_relative_loss_difference": test["estimate"], "mean_relative_loss_difference_ci": test["ci"],
                "outcome": test["outcome"]}
    series = {"setups": list(grid), "distilled": [acc[("distilled", s)] for s in grid],
              "random": [acc[("random", s)] for s in grid]}

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    xs = torch.arange(len(grid)).float()
    ax.bar(xs - 0.2, [acc[("distilled", s)] for s in grid], width=0.4, label=f"distilled ({dset.method})")
    ax.bar(xs + 0.2, [acc[("random", s)] for s in grid], width=0.4, label="random real, same size")
    ax.set_xticks(xs.tolist(), list(grid), rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("real test accuracy")
    ax.legend(fontsize=8)
    figure = save_figure(fig, ctx.out_dir, "sensitivity_grid.png")
    verdict = (f"Across {len(grid)} training setups the distilled set loses up to "
               f"{100 * summary['distilled/largest_relative_drop']:.0f}% of its standard-setup accuracy, a random "
               f"real subset of the same size up to {100 * summary['random/largest_relative_drop']:.0f}% (means over "
               f"{cfg['seeds']} seeds). Is distilled data more sensitive to the training setup than real data? "
               f"{describe(test)}.")
    table = Table(f"Test accuracy by training setup (base: {base.model}, {base.iterations} iterations, "
                  f"{'full batch' if base.batch_size is None else base.batch_size}, SGD lr {base.lr})",
                  ["setup", "distilled", "random real"], rows)
    return AuditResult(summary=summary, verdict=verdict, tables=[table], figures=[figure], tests=[test],
                       series=series)
