"""Q2 ``agreement``: does a model trained on distilled data predict like an early-stopped real model?

A model trained on the distilled set (the study's protocol) is compared with two pools of real-data
models of about the same test accuracy: (a) models trained on random class-balanced real subsets
of 0.5–5 % of the train split, (b) runs on the full real train split, looked at after every
iteration of their first ``early_iterations`` iterations. Agreement is the fraction of test images
on which two models' argmax predictions are equal.

Predictions are compared on the real test split, or with ``test_subsample`` on a seeded
class-balanced subsample of it (the ``cpu`` preset: 500 images, since the early-stopped pool
predicts the test images after every iteration). Accuracy matching is automatic: for every run of
(b) the iteration whose test accuracy is closest to the distilled-trained model's (ties: the
earliest); from (a) the members within ``tolerance`` of it. The study found the early-stopped
models agree more, for every method (e.g. DM .575 vs .47).
"""

from __future__ import annotations

import math

import torch

from distilkit.audit.common import pyplot, save_figure
from distilkit.audit.real_runs import (
    STUDY_DISTILLED,
    STUDY_REAL,
    early_pool,
    predict,
    subset_pool,
    test_split,
    train_on_distilled,
)
from distilkit.audit.registry import AuditContext, AuditResult, Table, register_audit
from distilkit.data.real import RealData
from distilkit.distilled import DistilledSet
from distilkit.train import TrainConfig


def early_window(spec: int | str, real: RealData, batch_size: int) -> int:
    """``early_iterations``: a number of iterations, or "epoch" for one epoch of the real train split."""
    if spec == "epoch":
        return math.ceil(real.train_labels.shape[0] / batch_size)
    return int(spec)


@register_audit(
    "agreement", question=2, summary="prediction agreement with early-stopped vs subset-trained real models",
    distributed=True,
    defaults={"model": "convnet", "distilled_protocol": STUDY_DISTILLED, "real_protocol": STUDY_REAL,
              "subset_pool": 520, "subset_fractions": [0.005, 0.05], "subset_epochs": 100,
              "early_runs": 30, "early_iterations": "epoch", "tolerance": 0.02, "test_subsample": None},
    presets={"cpu": {"model": "convnet-w32", "subset_pool": 12, "subset_epochs": 30, "early_runs": 3,
                     "early_iterations": 120, "tolerance": 0.03, "test_subsample": 500},
             "smoke": {"model": "convnet-w8-d2", "distilled_protocol": {**STUDY_DISTILLED, "iterations": 5},
                       "subset_pool": 3, "subset_epochs": 2, "early_runs": 2, "early_iterations": 4,
                       "tolerance": 1.0}},
)
def audit_agreement(dset: DistilledSet, real: RealData, cfg: dict, ctx: AuditContext) -> AuditResult:
    test_images, test_labels = test_split(real, cfg["test_subsample"], ctx.seed)
    distilled_protocol = TrainConfig(model=cfg["model"], **cfg["distilled_protocol"])
    model = train_on_distilled(dset, real, cfg["model"], distilled_protocol, ctx.seed, ctx.device, ctx.labels,
                               ctx.learned_lr)
    distilled_pred = predict(model, test_images, ctx.device)
    distilled_acc = (distilled_pred == test_labels).float().mean().item()
    tol = float(cfg["tolerance"])

    real_protocol = TrainConfig(model=cfg["model"], **cfg["real_protocol"])
    window = early_window(cfg["early_iterations"], real, real_protocol.batch_size or real.train_labels.shape[0])
    early = early_pool(real, ctx.models, cfg["model"], real_protocol, cfg["early_runs"], window, ctx.seed,
                       cfg["test_subsample"], ctx.device, ctx.accelerator)
    early_agree_all = (early["predictions"] == distilled_pred).float().mean(2)  # [runs, window + 1]
    gaps = (early["accuracy"] - distilled_acc).abs()
    matched_iteration = gaps.argmin(1)  # argmin returns the first minimum: the earliest iteration
    runs = torch.arange(gaps.shape[0])
    early_agree = early_agree_all[runs, matched_iteration]
    early_gap = gaps[runs, matched_iteration]

    subset_protocol = TrainConfig(model=cfg["model"], **{**cfg["real_protocol"], "epochs": cfg["subset_epochs"]})
    subsets = subset_pool(real, ctx.models, cfg["model"], subset_protocol, cfg["subset_pool"],
                          tuple(cfg["subset_fractions"]), ctx.seed, cfg["test_subsample"], ctx.device, ctx.accelerator)
    if not ctx.accelerator.is_main_process:  # the pools are built together; the main process reports
        return AuditResult(summary={}, verdict="")
    subset_agree_all = (subsets["predictions"] == distilled_pred).float().mean(1)
    subset_gap = (subsets["accuracy"] - distilled_acc).abs()
    matched = subset_gap <= tol
    subset_agree = subset_agree_all[matched]

    def mean(x: torch.Tensor) -> float | None:
        return round(x.mean().item(), 4) if x.numel() else None

    def std(x: torch.Tensor) -> float | None:
        return round(x.std().item(), 4) if x.numel() > 1 else None

    summary = {
        "distilled_test_accuracy": round(distilled_acc, 4),
        "early/agreement_mean": mean(early_agree), "early/agreement_std": std(early_agree),
        "early/runs": int(gaps.shape[0]), "early/window_iterations": window,
        "early/runs_within_tolerance": int((early_gap <= tol).sum()),
        "early/mean_matched_iteration": round(matched_iteration.float().mean().item(), 1),
        "early/mean_accuracy_gap": round(early_gap.mean().item(), 4),
        "subset/agreement_mean": mean(subset_agree), "subset/agreement_std": std(subset_agree),
        "subset/pool": int(subset_gap.shape[0]), "subset/matched": int(matched.sum()),
        "subset/accuracy_range": [round(subsets["accuracy"].min().item(), 4),
                                  round(subsets["accuracy"].max().item(), 4)],
        "tolerance": tol, "test_images": int(test_labels.shape[0]),
    }
    difference = None
    if summary["early/agreement_mean"] is not None and summary["subset/agreement_mean"] is not None:
        difference = round(summary["early/agreement_mean"] - summary["subset/agreement_mean"], 4)
    summary["early_minus_subset"] = difference

    matched_acc = early["accuracy"][runs, matched_iteration]
    rows = [[f"early-stopped run {r}", int(matched_iteration[r]), round(matched_acc[r].item(), 4),
             round(early_agree[r].item(), 4)] for r in range(gaps.shape[0])]
    rows += [[f"subset {int(subsets['per_class'][m])}/class", "-", round(subsets["accuracy"][m].item(), 4),
              round(subset_agree_all[m].item(), 4)] for m in torch.nonzero(matched).flatten().tolist()]
    table = Table(f"Accuracy-matched real models (distilled-trained model: {distilled_acc:.4f} test accuracy, "
                  f"tolerance ±{tol})", ["model", "iteration", "test accuracy", "agreement"], rows)

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = torch.linspace(0, 1, 41).tolist()
    left.hist(early_agree.tolist(), bins=bins, alpha=0.6, label=f"early-stopped (n={early_agree.numel()})")
    if subset_agree.numel():
        left.hist(subset_agree.tolist(), bins=bins, alpha=0.6, label=f"subset-trained (n={subset_agree.numel()})")
    left.set_xlabel("agreement with the distilled-trained model")
    left.set_ylabel("models")
    left.legend(fontsize=8)
    right.scatter(early["accuracy"].flatten().tolist(), early_agree_all.flatten().tolist(), s=6, alpha=0.5,
                  label="early-stopped, every iteration")
    right.scatter(subsets["accuracy"].tolist(), subset_agree_all.tolist(), s=10, alpha=0.7, label="subset-trained")
    right.axvspan(distilled_acc - tol, distilled_acc + tol, color="grey", alpha=0.2, label="accuracy match")
    right.set_xlabel("real model's test accuracy")
    right.set_ylabel("agreement")
    right.legend(fontsize=8)
    figure = save_figure(fig, ctx.out_dir, "agreement.png")

    if difference is None:
        closest = subsets["accuracy"][subset_gap.argmin()].item()
        verdict = (f"No subset-trained model came within ±{tol} of the distilled-trained model's accuracy "
                   f"({distilled_acc:.3f}; closest {closest:.3f}), so the comparison is open: widen "
                   "`subset_fractions` or `tolerance`.")
    else:
        relation = "more" if difference > 0 else "less"
        verdict = (f"The distilled-trained model ({distilled_acc:.3f} test accuracy) agrees {relation} with "
                   f"accuracy-matched early-stopped real models ({summary['early/agreement_mean']:.3f}, "
                   f"{gaps.shape[0]} runs, mean iteration {summary['early/mean_matched_iteration']:.0f}) than with "
                   f"subset-trained ones ({summary['subset/agreement_mean']:.3f}, {int(matched.sum())} matched of "
                   f"{subset_gap.shape[0]})" + (", as the study found." if difference > 0 else
                                                 ", unlike the study's finding."))
    if int((early_gap <= tol).sum()) < gaps.shape[0]:
        verdict += (f" {gaps.shape[0] - int((early_gap <= tol).sum())} early-stopped run(s) never came within "
                    f"±{tol} in the first {window} iterations.")
    return AuditResult(summary=summary, verdict=verdict, tables=[table], figures=[figure])
