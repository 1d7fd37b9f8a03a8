"""Q2 ``agreement``: does a model trained on distilled data predict like an early-stopped real model?

A model trained on the distilled set (the study's protocol) is compared with two pools of real-data
models of about the same test accuracy: (a) models trained on random class-balanced real subsets
of 0.5–5 % of the train split (the ``cpu`` preset: 2–25 %, since on the small embedded set a 5 %
subset stays well below the distilled set's accuracy and no subset model could be matched), (b)
runs on the full real train split, looked at after every iteration of their first
``early_iterations`` iterations. Agreement is the fraction of test images on which two models'
argmax predictions are equal.

Predictions are compared on the real test split, or with ``test_subsample`` on a seeded
class-balanced subsample of it (the ``cpu`` preset: 500 images, since the early-stopped pool
predicts the test images after every iteration). That split is cut in two seeded class-balanced
halves: accuracies are matched on the first half and agreement is scored on the second, so the
matching cannot select on the scored data.

One matching rule for both pools: for every distilled-trained model (``distilled_seeds`` of them,
independent inits) and every real training run — each run of (b) offers its iterates 0..window, each
model of (a) its final state — the candidate whose accuracy (matching half) is closest to the
distilled model's (ties: the earliest) is matched when it is within ``tolerance``. A run's
agreement is the mean over the distilled models it matched (scoring half). The two distributions
of per-run agreement are compared with a two-sided Mann–Whitney U test; the study's finding (the
early-stopped models agree more, for every method, e.g. DM .575 vs .47) holds when the test is
significant at 0.05 in that direction, does not hold when significant the other way, and is
inconclusive otherwise.
"""

from __future__ import annotations

import math

import torch

from distilkit.audit._common import pyplot, save_figure, share
from distilkit.audit._real_runs import (
    STUDY_DISTILLED,
    STUDY_REAL,
    early_pool,
    predict,
    subset_pool,
    test_split,
    train_on_distilled,
)
from distilkit.audit._registry import AuditContext, AuditResult, Table, register_audit
from distilkit.audit._stats import mann_whitney_u, outcome_from_test
from distilkit.data.real import RealData
from distilkit.distilled import DistilledSet
from distilkit.errors import DistilkitError
from distilkit.seeding import derive_seed
from distilkit.train import TrainConfig


def early_window(spec: int | str, real: RealData, batch_size: int) -> int:
    """``early_iterations``: a number of iterations, or "epoch" for one epoch of the real train split."""
    if spec == "epoch":
        return math.ceil(real.train_labels.shape[0] / batch_size)
    return int(spec)


def split_halves(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint sorted index sets of ``labels``, each class split in half at random (seeded); an odd
    item goes to the second half."""
    keys = torch.rand(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    order = torch.argsort(labels.double() * 2 + keys.double())  # by class, random within a class
    counts = torch.bincount(labels)
    position = torch.arange(labels.shape[0]) - (torch.cumsum(counts, 0) - counts)[labels[order]]
    first = position < (counts[labels[order]] // 2)
    return torch.sort(order[first]).values, torch.sort(order[~first]).values


def match_runs(candidate_accuracy: torch.Tensor, target: float, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The matching rule for both pools: per run (row) the candidate (column) whose accuracy is closest to
    ``target`` (ties: the first); returns (its index [runs], whether it is within ``tolerance`` [runs])."""
    gaps = (candidate_accuracy - target).abs()
    pick = gaps.argmin(1)  # argmin returns the first minimum: the earliest iteration
    return pick, gaps[torch.arange(gaps.shape[0]), pick] <= tolerance


@register_audit(
    "agreement", question=2, summary="prediction agreement with early-stopped vs subset-trained real models",
    distributed=True,
    defaults={"model": "convnet", "distilled_protocol": STUDY_DISTILLED, "real_protocol": STUDY_REAL,
              "distilled_seeds": 5, "subset_pool": 520, "subset_fractions": [0.005, 0.05], "subset_epochs": 100,
              "early_runs": 30, "early_iterations": "epoch", "tolerance": 0.02, "test_subsample": None},
    presets={"cpu": {"model": "convnet-w32", "distilled_seeds": 3, "subset_pool": 12,
                     "subset_fractions": [0.02, 0.25], "subset_epochs": 30, "early_runs": 6,
                     "early_iterations": 120, "tolerance": 0.03, "test_subsample": 500},
             "smoke": {"model": "convnet-w8-d2", "distilled_protocol": {**STUDY_DISTILLED, "iterations": 5},
                       "distilled_seeds": 3, "subset_pool": 3, "subset_epochs": 2, "early_runs": 2,
                       "early_iterations": 4, "tolerance": 1.0}},
)
def audit_agreement(dset: DistilledSet, real: RealData, cfg: dict, ctx: AuditContext) -> AuditResult:
    if int(cfg["distilled_seeds"]) < 1:
        raise DistilkitError("agreement: distilled_seeds must be at least 1")
    test_images, test_labels = test_split(real, cfg["test_subsample"], ctx.seed)
    match_half, score_half = split_halves(test_labels, derive_seed("agreement-split", ctx.seed))
    distilled_protocol = TrainConfig(model=cfg["model"], **cfg["distilled_protocol"])

    def distilled_predictions(i: int) -> torch.Tensor:
        model = train_on_distilled(dset, real, cfg["model"], distilled_protocol, ctx.seed, ctx.device, ctx.labels,
                                   ctx.learned_lr, index=i)
        return predict(model, test_images, ctx.device)

    distilled_pred = torch.stack(share(ctx.accelerator, range(int(cfg["distilled_seeds"])), distilled_predictions,
                                       "distilled-trained models"))  # [D, n_test]
    distilled_acc = (distilled_pred[:, match_half] == test_labels[match_half]).float().mean(1)  # [D]
    tol = float(cfg["tolerance"])

    real_protocol = TrainConfig(model=cfg["model"], **cfg["real_protocol"])
    window = early_window(cfg["early_iterations"], real, real_protocol.batch_size or real.train_labels.shape[0])
    early = early_pool(real, ctx.models, cfg["model"], real_protocol, cfg["early_runs"], window, ctx.seed,
                       cfg["test_subsample"], ctx.device, ctx.accelerator)
    subset_protocol = TrainConfig(model=cfg["model"], **{**cfg["real_protocol"], "epochs": cfg["subset_epochs"]})
    subsets = subset_pool(real, ctx.models, cfg["model"], subset_protocol, cfg["subset_pool"],
                          tuple(cfg["subset_fractions"]), ctx.seed, cfg["test_subsample"], ctx.device, ctx.accelerator)
    if not ctx.accelerator.is_main_process:  # the pools are built together; the main process reports
        return AuditResult(summary={}, verdict="")

    # candidates per run: [runs, candidates, n_test] predictions
    pools = {"early": early["predictions"].long(), "subset": subsets["predictions"].long().unsqueeze(1)}
    per_run, matched_iterations, matched_acc, matched_count = {}, [], {}, {}
    for name, predictions in pools.items():
        candidate_acc = (predictions[:, :, match_half] == test_labels[match_half]).float().mean(2)  # [R, C]
        scores = torch.zeros(predictions.shape[0])
        hits = torch.zeros(predictions.shape[0])
        accs = torch.zeros(predictions.shape[0])
        for d in range(distilled_pred.shape[0]):
            pick, ok = match_runs(candidate_acc, distilled_acc[d].item(), tol)
            chosen = predictions[torch.arange(predictions.shape[0]), pick][:, score_half]  # [R, n_score]
            agree = (chosen == distilled_pred[d, score_half]).float().mean(1)
            scores += agree * ok
            hits += ok.float()
            accs += candidate_acc[torch.arange(predictions.shape[0]), pick] * ok
            if name == "early":
                matched_iterations += pick[ok].tolist()
        keep = hits > 0
        per_run[name] = (scores[keep] / hits[keep])
        matched_acc[name] = (accs[keep] / hits[keep])
        matched_count[name] = hits
    early_agree, subset_agree = per_run["early"], per_run["subset"]

    def mean(x: torch.Tensor) -> float | None:
        return round(x.mean().item(), 4) if x.numel() else None

    def std(x: torch.Tensor) -> float | None:
        return round(x.std().item(), 4) if x.numel() > 1 else None

    summary = {
        "distilled_models": int(distilled_pred.shape[0]),
        "distilled_test_accuracy": round(distilled_acc.mean().item(), 4),
        "early/agreement_mean": mean(early_agree), "early/agreement_std": std(early_agree),
        "early/runs": int(early["predictions"].shape[0]), "early/window_iterations": window,
        "early/runs_matched": int(early_agree.numel()),
        "early/mean_matched_iteration": (round(sum(matched_iterations) / len(matched_iterations), 1)
                                         if matched_iterations else None),
        "subset/agreement_mean": mean(subset_agree), "subset/agreement_std": std(subset_agree),
        "subset/pool": int(subsets["predictions"].shape[0]), "subset/matched": int(subset_agree.numel()),
        "subset/accuracy_range": [round(subsets["accuracy"].min().item(), 4),
                                  round(subsets["accuracy"].max().item(), 4)],
        "tolerance": tol, "matching_images": int(match_half.numel()), "scoring_images": int(score_half.numel()),
    }
    difference = None
    if early_agree.numel() and subset_agree.numel():
        difference = round(early_agree.mean().item() - subset_agree.mean().item(), 4)
    summary["early_minus_subset"] = difference
    tests = []
    if difference is not None:
        mw = mann_whitney_u(early_agree.tolist(), subset_agree.tolist())
        test = {"claim": "distilled-trained models agree more with early-stopped than with subset-trained models",
                "statistic": "Mann–Whitney U, early-stopped vs subset-trained per-run agreement",
                "estimate": difference, "ci": None, "p": round(mw["p"], 6), "effect": round(mw["effect"], 4),
                "u": mw["u"], "n": f"{early_agree.numel()} + {subset_agree.numel()}",
                "method": f"two-sided Mann–Whitney U ({mw['method']}), α = 0.05",
                "outcome": outcome_from_test(mw["p"], mw["effect"], +1)}
        tests.append(test)
        summary |= {"mann_whitney_p": test["p"], "rank_biserial": test["effect"], "outcome": test["outcome"]}

    rows = [["early-stopped", r, int(matched_count["early"][r]), round(a, 4), round(g, 4)]
            for r, (a, g) in enumerate(zip(matched_acc["early"].tolist(), early_agree.tolist(), strict=True))]
    rows += [["subset-trained", m, int(matched_count["subset"][m]), round(a, 4), round(g, 4)]
             for m, (a, g) in enumerate(zip(matched_acc["subset"].tolist(), subset_agree.tolist(), strict=True))]
    table = Table(f"Accuracy-matched real runs (distilled-trained models: {distilled_acc.mean():.4f} mean accuracy on "
                  f"the matching half; tolerance ±{tol}; agreement on the scoring half)",
                  ["pool", "matched run", "distilled models matched", "accuracy (matching half)", "agreement"], rows)
    series = {"early": early_agree.tolist(), "subset": subset_agree.tolist(),
              "distilled_accuracy": distilled_acc.tolist()}

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = torch.linspace(0, 1, 41).tolist()
    left.hist(early_agree.tolist(), bins=bins, alpha=0.6, label=f"early-stopped (n={early_agree.numel()})")
    if subset_agree.numel():
        left.hist(subset_agree.tolist(), bins=bins, alpha=0.6, label=f"subset-trained (n={subset_agree.numel()})")
    left.set_xlabel("agreement with the distilled-trained models (scoring half)")
    left.set_ylabel("real runs")
    left.legend(fontsize=8)
    first = distilled_pred[0, score_half]
    early_scored = early["predictions"].long()[:, :, score_half]
    early_acc_all = (early["predictions"].long()[:, :, match_half] == test_labels[match_half]).float().mean(2)
    subset_acc_all = (subsets["predictions"].long()[:, match_half] == test_labels[match_half]).float().mean(1)
    right.scatter(early_acc_all.flatten().tolist(), (early_scored == first).float().mean(2).flatten().tolist(), s=6,
                  alpha=0.5, label="early-stopped, every iteration")
    right.scatter(subset_acc_all.tolist(),
                  (subsets["predictions"].long()[:, score_half] == first).float().mean(1).tolist(), s=10, alpha=0.7,
                  label="subset-trained")
    target = distilled_acc[0].item()
    right.axvspan(target - tol, target + tol, color="grey", alpha=0.2, label="accuracy match (distilled model 0)")
    right.set_xlabel("real model's accuracy (matching half)")
    right.set_ylabel("agreement with distilled model 0")
    right.legend(fontsize=8)
    figure = save_figure(fig, ctx.out_dir, "agreement.png")

    if difference is None:
        empty = "subset-trained" if not subset_agree.numel() else "early-stopped"
        verdict = (f"No {empty} run came within ±{tol} of the distilled-trained models' accuracy "
                   f"({distilled_acc.mean():.3f} on the matching half), so the comparison is inconclusive at this "
                   "budget: widen `subset_fractions`, `early_iterations` or `tolerance`.")
    else:
        test = tests[0]
        said = {"holds": "as the study found", "does not hold": "unlike the study's finding"}.get(
            test["outcome"], "so the study's finding is open")
        verdict = (f"{distilled_pred.shape[0]} distilled-trained models ({distilled_acc.mean():.3f} mean accuracy) "
                   f"agree {summary['early/agreement_mean']:.3f} with accuracy-matched early-stopped real runs "
                   f"({early_agree.numel()} of {summary['early/runs']} matched) and "
                   f"{summary['subset/agreement_mean']:.3f} with subset-trained ones ({subset_agree.numel()} of "
                   f"{summary['subset/pool']} matched); Mann–Whitney U p = {test['p']:.2g}, rank-biserial "
                   f"{test['effect']:+.2f}: the study's finding (early-stopped agree more) {test['outcome']} ({said}).")
    return AuditResult(summary=summary, verdict=verdict, tables=[table], figures=[figure], tests=tests, series=series)
