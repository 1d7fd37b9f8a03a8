"""Q2 ``early-recognition``: does real training learn the distilled set early, and keep learning after?

One model is trained on the real train split (the study's protocol: SGD lr 0.01, momentum 0.9,
batch 256, no augmentation); before the first and after every iteration its accuracy on the
distilled images (their hard labels) and on the real test split (or, with ``test_subsample``, a
seeded class-balanced subsample of it) is recorded.

Plateau rule (stored in the report with its parameters): smooth the distilled-set accuracy with a
trailing moving average over ``window`` iterations; the plateau iteration is the first iteration at
which the smoothed curve comes within ``plateau_tolerance`` of its maximum over the run. Reported:
that iteration, the (equally smoothed) real test accuracy there and at the end, and the gain in
between, with a bootstrap interval over test images of that gain (each image's smoothed correctness
at the end minus at the plateau). The finding holds when the plateau comes before ``early_fraction``
of the run and the gain's interval lies above 0. The cross-entropy of the distilled set (hard
labels) is recorded along the same run (``distilled_loss`` in the report's series; its minimum and
end in the summary). The study found distilled accuracy saturating early (BPTT/TM at 1.0 by
iteration ~100–150, DM ~0.75) while test accuracy keeps rising.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from distilkit.audit._common import pyplot, save_figure
from distilkit.audit._real_runs import STUDY_REAL, predict, seeded_model, test_split
from distilkit.audit._registry import AuditContext, AuditResult, Table, register_audit
from distilkit.audit._stats import FAILS, HOLDS, describe, paired_test
from distilkit.data.real import RealData
from distilkit.distilled import DistilledSet
from distilkit.seeding import derive_seed
from distilkit.seeding import generator as seed_generator
from distilkit.train import TrainConfig, training_steps


def trailing_mean(values: torch.Tensor, window: int) -> torch.Tensor:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    csum = torch.cat([torch.zeros(1, dtype=torch.float64), values.double().cumsum(0)])
    idx = torch.arange(1, values.numel() + 1)
    start = (idx - window).clamp(min=0)
    return ((csum[idx] - csum[start]) / (idx - start)).to(values.dtype)


def plateau_iteration(distilled_accuracy: torch.Tensor, window: int, tolerance: float) -> int:
    smoothed = trailing_mean(distilled_accuracy, window)
    return int(torch.nonzero(smoothed >= smoothed.max() - tolerance)[0])


@torch.no_grad()
def _accuracy_and_loss(model, images: torch.Tensor, labels: torch.Tensor, device) -> tuple[float, float]:
    """Accuracy and mean cross-entropy (hard labels) of ``model`` in eval mode on ``images``."""
    model.eval()
    logits = torch.cat([model(part.to(device)).float().cpu() for part in images.split(1000)])
    return ((logits.argmax(1) == labels).float().mean().item(),
            torch.nn.functional.cross_entropy(logits, labels).item())


@register_audit(
    "early-recognition", question=2, summary="distilled-set accuracy along real training vs real test accuracy",
    defaults={"model": "convnet", "protocol": STUDY_REAL, "iterations": 300, "window": 10,
              "plateau_tolerance": 0.02, "early_fraction": 0.75, "test_subsample": None},
    presets={"cpu": {"model": "convnet-w32", "test_subsample": 500},
             "smoke": {"model": "convnet-w8-d2", "iterations": 6, "window": 2}},
)
def audit_early_recognition(dset: DistilledSet, real: RealData, cfg: dict, ctx: AuditContext) -> AuditResult:
    protocol = TrainConfig(model=cfg["model"], **cfg["protocol"])
    steps, window, tol = int(cfg["iterations"]), int(cfg["window"]), float(cfg["plateau_tolerance"])
    test_images, test_labels = test_split(real, cfg["test_subsample"], ctx.seed)
    model = seeded_model(cfg["model"], real, ctx.seed, "early-recognition-run")
    images = real.batch(torch.arange(real.train_labels.shape[0]))
    distilled_acc = torch.empty(steps + 1)
    distilled_loss = torch.empty(steps + 1)
    test_correct = torch.empty(steps + 1, test_labels.shape[0])  # per iteration and test image: 1 if right
    bar = tqdm(total=steps + 1, desc="early-recognition", disable=not ctx.accelerator.is_local_main_process)
    for t in training_steps(model, images, real.train_labels, protocol,
                            seed_generator("early-recognition-run", ctx.seed, "order"),
                            device=ctx.device, steps=steps):
        distilled_acc[t], distilled_loss[t] = _accuracy_and_loss(model, dset.images, dset.labels, ctx.device)
        test_correct[t] = (predict(model, test_images, ctx.device) == test_labels).float()
        bar.update()
    bar.close()
    test_acc = test_correct.mean(1)

    plateau = plateau_iteration(distilled_acc, window, tol)
    smooth_distilled, smooth_test = trailing_mean(distilled_acc, window), trailing_mean(test_acc, window)
    perfect = torch.nonzero(distilled_acc >= 1.0)
    summary = {
        "iterations": steps, "test_images": int(test_labels.shape[0]),
        "plateau_rule": f"first iteration where the {window}-iteration trailing mean of distilled-set accuracy "
                        f"is within {tol} of its maximum",
        "plateau_iteration": plateau,
        "early_rule": f"the plateau comes before iteration {float(cfg['early_fraction']) * steps:g} "
                      f"({cfg['early_fraction']} of the run)",
        "distilled_accuracy_at_plateau": round(smooth_distilled[plateau].item(), 4),
        "distilled_accuracy_end": round(smooth_distilled[-1].item(), 4),
        "test_accuracy_at_plateau": round(smooth_test[plateau].item(), 4),
        "test_accuracy_end": round(smooth_test[-1].item(), 4),
        "test_gain_after_plateau": round((smooth_test[-1] - smooth_test[plateau]).item(), 4),
        "first_iteration_all_distilled_correct": int(perfect[0]) if perfect.numel() else None,
        "distilled_loss_start": round(distilled_loss[0].item(), 4),
        "distilled_loss_min": round(distilled_loss.min().item(), 4),
        "distilled_loss_min_iteration": int(distilled_loss.argmin()),
        "distilled_loss_at_plateau": round(distilled_loss[plateau].item(), 4),
        "distilled_loss_end": round(distilled_loss[-1].item(), 4),
    }
    marks = sorted({0, plateau, steps // 4, steps // 2, steps} & set(range(steps + 1)))
    table = Table(f"Real training ({cfg['model']}, batch {protocol.batch_size}, lr {protocol.lr}): accuracy along the "
                  f"run (raw)", ["iteration", "distilled-set accuracy", "distilled-set loss", "real test accuracy"],
                  [[t, round(distilled_acc[t].item(), 4), round(distilled_loss[t].item(), 4),
                    round(test_acc[t].item(), 4)] for t in marks])

    plt = pyplot()
    fig, (ax, loss_ax) = plt.subplots(1, 2, figsize=(12, 3.6))
    xs = list(range(steps + 1))
    ax.plot(xs, distilled_acc.tolist(), alpha=0.3, color="C0")
    ax.plot(xs, smooth_distilled.tolist(), color="C0", label=f"distilled set ({dset.method})")
    ax.plot(xs, test_acc.tolist(), alpha=0.3, color="C1")
    ax.plot(xs, smooth_test.tolist(), color="C1", label="real test set")
    ax.axvline(plateau, color="grey", linestyle="--", label=f"distilled plateau (iteration {plateau})")
    ax.set_xlabel("iteration of real training")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    loss_ax.plot(xs, distilled_loss.tolist(), color="C0", label=f"distilled set ({dset.method}), hard labels")
    loss_ax.axvline(plateau, color="grey", linestyle="--")
    loss_ax.set_xlabel("iteration of real training")
    loss_ax.set_ylabel("cross-entropy on the distilled set")
    loss_ax.legend(fontsize=8)
    figure = save_figure(fig, ctx.out_dir, "early_recognition.png")
    series = {"distilled_accuracy": distilled_acc.tolist(), "distilled_loss": distilled_loss.tolist(),
              "test_accuracy": test_acc.tolist()}

    # Per test image: its (equally smoothed) correctness at the end minus at the plateau; the bootstrap
    # over test images gives the interval of the gain (one real run: seed variation is not in it).
    at_plateau = test_correct[max(0, plateau + 1 - window):plateau + 1].mean(0)
    at_end = test_correct[max(0, steps + 1 - window):].mean(0)
    gain_test = paired_test("real test accuracy keeps rising after the distilled set's plateau",
                            f"test-accuracy gain from the plateau (iteration {plateau}) to the end",
                            (at_end - at_plateau).tolist(), +1,
                            seed=derive_seed("early-recognition-bootstrap", ctx.seed), unit="test images")
    early = plateau < float(cfg["early_fraction"]) * steps
    outcome = gain_test["outcome"] if early else FAILS
    summary |= {"early_plateau": early, "outcome": outcome}
    said = {HOLDS: "as the study found", FAILS: "unlike the study's finding"}.get(outcome, "at this budget")
    verdict = (f"A model trained on real data reaches its plateau on the distilled set "
               f"({summary['distilled_accuracy_at_plateau']:.3f}) at iteration {plateau} of {steps} "
               f"({'early' if early else 'late'}: the rule is before {summary['early_rule'].split('before ')[1]}); "
               f"real test accuracy goes from {summary['test_accuracy_at_plateau']:.3f} there to "
               f"{summary['test_accuracy_end']:.3f} at the end; {describe(gain_test)}. The study's finding (the "
               f"distilled set is learned early, real learning goes on): {outcome} ({said}); the interval is over test "
               f"images of this one real run (seed {ctx.seed}).")
    verdict += (f" The distilled set's loss goes from {summary['distilled_loss_start']:.3f} to its minimum "
                f"{summary['distilled_loss_min']:.3f} at iteration {summary['distilled_loss_min_iteration']} and "
                f"ends at {summary['distilled_loss_end']:.3f}.")
    return AuditResult(summary=summary, verdict=verdict, tables=[table], figures=[figure], series=series,
                       tests=[gain_test])
