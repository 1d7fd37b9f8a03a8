"""Q3 ``influence``: does a single distilled image carry meaning a person could name?

For every distilled image i and real test image t the audit measures influence[i, t] — by exact
leave-one-out (the study's estimator, vectorised over the N + 1 trainings, see
:mod:`distilkit.audit.loo`) or, for sets too large for that, by TracIn — and looks at each
distilled image's top-k most influenced test images (no class filter). Three numbers make the
study's qualitative claim ("each top set shares a sub-concept") measurable:

- class purity: share of the top-k with the distilled image's label (chance: the class's share);
- same-class share of positive influence: how much of what the image helps lies in its own class;
- coherence: mean pairwise cosine similarity of the top-k images' penultimate features under a
  real-trained ConvNet (shared with ``recognition``), against two baselines: random same-class
  sets of k (the issue's definition), and random sets with the top-k's own class make-up (each
  member replaced by a random test image of its class). A top-k that mixes classes is less alike
  than a same-class set for that reason alone; only the class-matched baseline isolates the
  study's claim that a top set shares a sub-concept beyond its classes.

The fast estimator's agreement with exact LOO is always reported (Spearman rank correlation over
all (i, t) pairs): on the whole set when exact LOO is run, else on a class-balanced subset of
``check_size`` distilled images. The influence matrix is saved as ``audit/influence.safetensors``.
Under Accelerate the leave-one-out models are split across the processes (``distributed`` audit);
the main process gathers the matrix and does the rest.
"""

from __future__ import annotations

import math
import os

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from distilkit.audit.common import pyplot, save_figure, to_original_pixels
from distilkit.audit.loo import influence_from_losses, loo_test_losses, spearman, tracin
from distilkit.audit.real_models import penultimate
from distilkit.audit.real_runs import STUDY_DISTILLED, balanced_subsample, seeded_model, test_split
from distilkit.audit.recognition import panel_protocol
from distilkit.audit.registry import AuditContext, AuditResult, Table, register_audit
from distilkit.data.real import RealData
from distilkit.distilled import DistilledSet
from distilkit.errors import DistilkitError
from distilkit.seeding import derive_seed
from distilkit.seeding import generator as seed_generator
from distilkit.train import TrainConfig

ESTIMATORS = ("auto", "exact", "tracin")
ARTIFACT = "influence.safetensors"


def mean_pairwise_cosine(features: torch.Tensor) -> torch.Tensor:
    """[..., k, d] -> [...]: mean cosine similarity over the k(k-1) ordered pairs of distinct rows."""
    unit = torch.nn.functional.normalize(features, dim=-1)
    sims = unit @ unit.transpose(-1, -2)
    k = features.shape[-2]
    return (sims.sum((-1, -2)) - sims.diagonal(dim1=-2, dim2=-1).sum(-1)) / (k * (k - 1))


def exact_influence(images, targets, test_images, test_labels, init, protocol: TrainConfig, cfg: dict, lr,
                    accelerator) -> torch.Tensor:
    """Exact leave-one-out influence [N, T]; the N + 1 models are split across the Accelerate processes
    (contiguous shares, gathered in order), every process returns the whole matrix."""
    from accelerate.utils import gather_object

    n = images.shape[0]
    per_rank = -(-(n + 1) // accelerator.num_processes)
    share = list(range(n + 1))[accelerator.process_index * per_rank : (accelerator.process_index + 1) * per_rank]
    bar = tqdm(total=len(share) * protocol.steps_for(n), desc="leave-one-out", unit="model-step",
               disable=not accelerator.is_local_main_process)
    losses = loo_test_losses(init, images, targets, test_images, test_labels, protocol, lr, cfg["model_chunk"],
                             device=accelerator.device, progress=bar, models=share, strategy=cfg["strategy"])
    bar.close()
    if accelerator.num_processes > 1:
        losses = torch.cat([part for part in gather_object([losses]) if part.numel()])
    return influence_from_losses(losses)


def random_same_class_coherence(features: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int,
                                sets: int, seed: int) -> torch.Tensor:
    """[num_classes]: mean pairwise cosine of ``sets`` random k-subsets of each class (one draw for all classes:
    random keys over a padded [classes, sets, largest class] grid, the k smallest valid keys per row)."""
    counts = torch.bincount(labels, minlength=num_classes)
    order = torch.argsort(labels, stable=True)
    offsets = torch.cumsum(counts, 0) - counts
    k = min(k, int(counts[counts > 0].min()))
    keys = torch.rand(num_classes, sets, int(counts.max()), generator=torch.Generator().manual_seed(seed))
    keys[(torch.arange(keys.shape[2]) >= counts.view(-1, 1, 1)).expand_as(keys)] = 2.0
    positions = keys.topk(k, dim=2, largest=False).indices
    draws = order[(offsets.view(-1, 1, 1) + positions).clamp(max=labels.numel() - 1)]
    return mean_pairwise_cosine(features[draws]).mean(1)


def sign_test_p(successes: int, trials: int) -> float:
    """Two-sided exact binomial sign test of ``successes`` out of ``trials`` against p = 1/2."""
    if trials == 0:
        return 1.0
    tail = min(successes, trials - successes)
    return min(1.0, 2 * sum(math.comb(trials, i) for i in range(tail + 1)) / 2**trials)


def two_proportion_p(a: float, n_a: int, b: float, n_b: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test for shares ``a`` of ``n_a`` and ``b`` of ``n_b``."""
    pooled = (a * n_a + b * n_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return 1.0 if spread == 0 else math.erfc(abs(a - b) / spread / math.sqrt(2))


def class_matched_coherence(features: torch.Tensor, labels: torch.Tensor, top: torch.Tensor, sets: int,
                            seed: int) -> torch.Tensor:
    """[N]: mean pairwise cosine of ``sets`` random sets per row of ``top`` [N, k] with the same class
    make-up (member j replaced by a random image of class ``labels[top[:, j]]``)."""
    counts = torch.bincount(labels)
    order = torch.argsort(labels, stable=True)
    offsets = torch.cumsum(counts, 0) - counts
    member_class = labels[top]
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(top.shape[0])
    for _ in range(sets):  # one vectorised draw for all rows per set; sets x N x k x d at once can be large
        u = torch.rand(top.shape, generator=generator)
        picks = order[offsets[member_class] + (u * counts[member_class]).long().clamp(max=counts[member_class] - 1)]
        total += mean_pairwise_cosine(features[picks])
    return total / sets


def _influence(images, targets, labels, test_images, test_labels, init, protocol, cfg, lr, estimator: str,
               ctx: AuditContext, num_classes: int):
    """Influence [N, T] by ``estimator``, and TracIn's Spearman correlation with exact LOO (on the whole
    set, or on a class-balanced subset of ``check_size`` images when TracIn is the estimator).
    Non-main processes return ``None`` after their share of the leave-one-out models."""
    n, checkpoints = images.shape[0], cfg["tracin_checkpoints"]
    if estimator == "exact":
        influence = exact_influence(images, targets, test_images, test_labels, init, protocol, cfg, lr,
                                    ctx.accelerator)
        subset = torch.arange(n)
    else:  # TracIn, validated against exact leave-one-out on a class-balanced subset of the set
        subset = balanced_subsample(labels, max(1, cfg["check_size"] // num_classes),
                                    derive_seed("tracin-check", ctx.seed))
        small_exact = exact_influence(images[subset], targets[subset], test_images, test_labels, init, protocol,
                                      cfg, lr, ctx.accelerator)
    if not ctx.accelerator.is_main_process:
        return None
    if estimator == "exact":
        fast = tracin(init, images, targets, test_images, test_labels, protocol, checkpoints, lr, device=ctx.device)
        correlation = spearman(fast, influence)
    else:
        influence = tracin(init, images, targets, test_images, test_labels, protocol, checkpoints, lr,
                           device=ctx.device)
        small_fast = tracin(init, images[subset], targets[subset], test_images, test_labels, protocol, checkpoints,
                            lr, device=ctx.device)
        correlation = spearman(small_fast, small_exact)
    return influence, correlation, int(subset.numel())


def _semantics(influence: torch.Tensor, labels: torch.Tensor, test_labels: torch.Tensor, features: torch.Tensor,
               k: int, num_classes: int, cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    """Per distilled image: its top-k test images, their class purity, the same-class share of its positive
    influence, their feature coherence and the two random baselines (same class; same class make-up)."""
    top = influence.topk(min(k, influence.shape[1]), dim=1).indices  # [N, k]
    positive = influence.clamp(min=0)
    same_class = test_labels.unsqueeze(0) == labels.unsqueeze(1)
    random_coherence = random_same_class_coherence(features, test_labels, num_classes, top.shape[1],
                                                   cfg["random_sets"], derive_seed("coherence-random", seed))
    return {"top": top, "purity": (test_labels[top] == labels.unsqueeze(1)).float().mean(1),
            "positive_share": (positive * same_class).sum(1) / positive.sum(1).clamp_min(1e-12),
            "coherence": mean_pairwise_cosine(features[top]), "random_same_class": random_coherence[labels],
            "random_by_class": random_coherence,
            "matched": class_matched_coherence(features, test_labels, top, cfg["random_sets"],
                                               derive_seed("coherence-class-matched", seed))}


def _summary(stats: dict[str, torch.Tensor]) -> dict:
    above = int((stats["coherence"] > stats["matched"]).sum())
    n = stats["coherence"].numel()
    return {"class_purity": round(stats["purity"].mean().item(), 4),
            "positive_influence_same_class_share": round(stats["positive_share"].mean().item(), 4),
            "coherence_top_k": round(stats["coherence"].mean().item(), 4),
            "coherence_random_same_class": round(stats["random_same_class"].mean().item(), 4),
            "share_more_coherent_than_random": round((stats["coherence"] > stats["random_same_class"])
                                                     .float().mean().item(), 4),
            "coherence_random_class_matched": round(stats["matched"].mean().item(), 4),
            "share_more_coherent_than_class_matched": round(above / n, 4),
            "sign_test_p_class_matched": round(sign_test_p(above, n), 6)}


@register_audit(
    "influence", question=3, summary="leave-one-out influence of each distilled image; semantics of its top-k",
    distributed=True,
    defaults={"model": "convnet", "protocol": STUDY_DISTILLED, "estimator": "auto", "exact_limit": 1000,
              "check_size": 50, "tracin_checkpoints": 30, "top_k": 9, "test_subsample": None, "model_chunk": 16,
              "strategy": "auto", "coherence_model": "convnet", "coherence_epochs": 40, "random_sets": 50,
              "max_class_figures": 10, "random_real_baseline": True},
    presets={"cpu": {"model": "convnet-w16", "protocol": {**STUDY_DISTILLED, "iterations": 60},
                     "test_subsample": 500, "coherence_model": "convnet-w32", "coherence_epochs": 5},
             "smoke": {"model": "convnet-w8-d2", "protocol": {**STUDY_DISTILLED, "iterations": 4},
                       "test_subsample": 60, "top_k": 3, "check_size": 6, "tracin_checkpoints": 2,
                       "coherence_model": "convnet-w8-d2", "coherence_epochs": 1, "random_sets": 3,
                       "max_class_figures": 2}},
)
def audit_influence(dset: DistilledSet, real: RealData, cfg: dict, ctx: AuditContext) -> AuditResult:
    if cfg["estimator"] not in ESTIMATORS:
        raise DistilkitError(f"influence: unknown estimator {cfg['estimator']!r}; choose from {', '.join(ESTIMATORS)}")
    protocol = TrainConfig(model=cfg["model"], **cfg["protocol"])
    lr = ctx.distilled_lr(dset)
    images, targets, labels = dset.images, ctx.distilled_targets(dset), dset.labels
    test_images, test_labels = test_split(real, cfg["test_subsample"], ctx.seed)
    n, k = images.shape[0], int(cfg["top_k"])
    estimator = cfg["estimator"]
    if estimator == "auto":
        estimator = "exact" if n <= cfg["exact_limit"] else "tracin"
    init = seeded_model(cfg["model"], real, ctx.seed, "loo")  # the coherence model's stream is "real-model"
    measured = _influence(images, targets, labels, test_images, test_labels, init, protocol, cfg, lr, estimator,
                          ctx, dset.num_classes)
    baseline = None
    if cfg["random_real_baseline"]:  # the same measurement for class-balanced random real images, same counts
        counts = torch.bincount(labels, minlength=dset.num_classes)
        generator = seed_generator("influence-baseline", ctx.seed)
        pick = torch.cat([real.class_indices(c)[torch.randperm(len(real.class_indices(c)), generator=generator)
                                                [: int(counts[c])]] for c in range(dset.num_classes)])
        base_labels = real.train_labels[pick]
        baseline = _influence(real.batch(pick), base_labels, base_labels, test_images, test_labels, init, protocol,
                              cfg, None, estimator, ctx, dset.num_classes)
    if measured is None:  # not the main process: its share of the leave-one-out models is done
        return AuditResult(summary={}, verdict="")
    influence, correlation, checked = measured

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    tmp = ctx.out_dir / f".{ARTIFACT}.tmp{os.getpid()}"
    tensors = {"influence": influence.contiguous(), "distilled_labels": labels.contiguous(),
               "test_labels": test_labels.contiguous()}
    if baseline is not None:
        tensors |= {"random_real_influence": baseline[0].contiguous(), "random_real_labels": base_labels.contiguous()}
    save_file(tensors, str(tmp), metadata={"estimator": estimator,
                                           "definition": "loss_t(without i) - loss_t(with all)"})
    os.replace(tmp, ctx.out_dir / ARTIFACT)

    feature_model, _ = ctx.models.get(real, cfg["coherence_model"], panel_protocol(cfg["coherence_model"],
                                      cfg["coherence_epochs"]), ctx.seed, ctx.device)
    with torch.no_grad():
        features = torch.cat([penultimate(feature_model, test_images[s : s + 500].to(ctx.device)).cpu()
                              for s in range(0, test_images.shape[0], 500)])
    stats = _semantics(influence, labels, test_labels, features, k, dset.num_classes, cfg, ctx.seed)
    top = stats["top"]
    class_share = torch.bincount(test_labels, minlength=dset.num_classes).float() / test_labels.numel()
    summary = {"estimator": estimator, "distilled_images": n, "test_images": int(test_labels.numel()),
               "top_k": top.shape[1], **_summary(stats),
               "chance_purity": round(class_share[labels].mean().item(), 4),
               "tracin_vs_exact_spearman": round(correlation, 4), "tracin_check_images": checked}
    if baseline is not None:
        base_stats = _semantics(baseline[0], base_labels, test_labels, features, k, dset.num_classes, cfg, ctx.seed)
        summary |= {f"random_real/{key}": value for key, value in _summary(base_stats).items()}
        summary["random_real/tracin_vs_exact_spearman"] = round(baseline[1], 4)
        summary["difference_p_vs_random_real"] = round(two_proportion_p(
            summary["share_more_coherent_than_class_matched"], n,
            summary["random_real/share_more_coherent_than_class_matched"], int(base_labels.numel())), 6)
    rows = []
    for c in range(dset.num_classes):
        mask = labels == c
        if mask.any():
            rows.append([dset.class_names[c], int(mask.sum()), round(stats["purity"][mask].mean().item(), 3),
                         round(stats["positive_share"][mask].mean().item(), 3),
                         round(stats["coherence"][mask].mean().item(), 3),
                         round(stats["random_by_class"][c].item(), 3), round(stats["matched"][mask].mean().item(), 3)])
    tables = [Table(f"Top-{top.shape[1]} most influenced real test images per distilled image ({estimator} influence)",
                    ["class", "images", "purity", "positive same-class share", "coherence", "random same-class",
                     "random, same class make-up"], rows)]
    if baseline is not None:
        keys = ["class_purity", "positive_influence_same_class_share", "coherence_top_k",
                "coherence_random_class_matched", "share_more_coherent_than_class_matched",
                "sign_test_p_class_matched"]
        tables.append(Table("The distilled set vs class-balanced random real images of the same size",
                            ["measure", f"distilled ({dset.method})", "random real"],
                            [[key, summary[key], summary[f"random_real/{key}"]] for key in keys]))
    figures = class_grids(dset, test_images, test_labels, top, real, ctx, cfg["max_class_figures"])
    return AuditResult(summary=summary, verdict=_verdict(summary, top.shape[1], correlation, checked),
                       tables=tables, figures=figures, artifacts=[f"{ctx.out_dir.name}/{ARTIFACT}"])


def _verdict(summary: dict, k: int, correlation: float, checked: int) -> str:
    same_class = summary["coherence_top_k"] > summary["coherence_random_same_class"]
    beyond_classes = (summary["coherence_top_k"] > summary["coherence_random_class_matched"]
                      and summary["sign_test_p_class_matched"] < 0.05)
    verdict = (f"Each distilled image's top-{k} influenced test images are "
               f"{100 * summary['class_purity']:.0f}% its own class (chance {100 * summary['chance_purity']:.0f}%); "
               f"their features are {'more' if same_class else 'less'} alike than random same-class sets "
               f"(cosine {summary['coherence_top_k']:.3f} vs {summary['coherence_random_same_class']:.3f}) and "
               f"{'more' if beyond_classes else 'less'} alike than random sets with the same class make-up "
               f"({summary['coherence_random_class_matched']:.3f}; "
               f"{100 * summary['share_more_coherent_than_class_matched']:.0f}% of images, sign test p = "
               f"{summary['sign_test_p_class_matched']:.2g})"
               + (": single distilled points pick out sub-concepts beyond their classes, as the study found."
                  if beyond_classes else ": no sign of the sub-concept structure the study found."))
    if "random_real/class_purity" in summary:
        share, base_share = summary["share_more_coherent_than_class_matched"], \
            summary["random_real/share_more_coherent_than_class_matched"]
        p_diff = summary["difference_p_vs_random_real"]
        verdict += (f" Random real images of the same number show {100 * base_share:.0f}% (sign test p = "
                    f"{summary['random_real/sign_test_p_class_matched']:.2g}); the difference has p = {p_diff:.2g}, so "
                    + (f"the pattern is {'stronger' if share > base_share else 'weaker'} for the distilled set."
                       if p_diff < 0.05 else "the distilled set is not distinguishable from a small real training "
                                             "set in this respect."))
    return verdict + f" TracIn vs exact leave-one-out: Spearman {correlation:.2f} ({checked} images)."


def class_grids(dset: DistilledSet, test_images: torch.Tensor, test_labels: torch.Tensor, top: torch.Tensor,
                real: RealData, ctx: AuditContext, max_classes: int, max_rows: int = 10) -> list[str]:
    """One figure per class: each row a distilled image, then its top-k test images (green title: same class)."""
    plt = pyplot()
    distilled = to_original_pixels(dset.images, dset.pixel_space).clamp(0, 1)
    test = to_original_pixels(test_images, real.pixel_space).clamp(0, 1)

    def show(ax, image: torch.Tensor) -> None:
        ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if image.shape[0] == 1 else None)
        ax.set_xticks([])
        ax.set_yticks([])

    figures = []
    for c in range(min(dset.num_classes, max_classes)):
        rows = torch.nonzero(dset.labels == c).flatten()[:max_rows].tolist()
        if not rows:
            continue
        cols = top.shape[1] + 1
        fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 0.9, len(rows) * 0.95 + 0.3), squeeze=False)
        for r, i in enumerate(rows):
            show(axes[r][0], distilled[i])
            axes[r][0].set_ylabel(f"#{i}", fontsize=6)
            for j, t in enumerate(top[i].tolist()):
                show(axes[r][j + 1], test[t])
                same = int(test_labels[t]) == c
                axes[r][j + 1].set_title(dset.class_names[int(test_labels[t])][:10], fontsize=5,
                                         color="green" if same else "red")
        fig.suptitle(f"{dset.class_names[c]}: distilled image, then its top-{top.shape[1]} influenced test images",
                     fontsize=7)
        figures.append(save_figure(fig, ctx.out_dir, f"influence_class{c}.png"))
    return figures
