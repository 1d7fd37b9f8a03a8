"""Q3 ``influence``: does a single distilled image carry meaning a person could name?

For every distilled image i and real test image t the audit measures influence[i, t] — by exact
leave-one-out (the study's estimator, vectorised over the N + 1 trainings, see
:mod:`distilkit.audit._loo`) or, for sets too large for that, by TracIn — and looks at each
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

Noise floor: exact leave-one-out is repeated from ``inits`` − 1 further initialisations (on the
images exact LOO covers: the whole set, or the check subset under TracIn); reported next to the
semantic scores are the mean top-k overlap of each image between the inits (chance: k / test
images), its bootstrap interval over images, and the Spearman correlation of the matrices. A
top-k that changes with the init cannot carry a stable sub-concept.

The fast estimator's agreement with exact LOO is always reported (Spearman rank correlation over
all (i, t) pairs): on the whole set when exact LOO is run, else on a class-balanced subset of
``check_size`` distilled images. TracIn counts as a substitute for exact LOO only when that
correlation is at least 0.5 and at least the LOO-vs-LOO correlation between inits (it must track
LOO as well as LOO tracks itself); otherwise the verdict says so, and when TracIn was the estimator
the Q3 outcome is "inconclusive at this budget". The influence matrix is saved as ``audit/influence.safetensors``.
Under Accelerate the leave-one-out models are split across the processes (``distributed`` audit);
the main process gathers the matrix and does the rest.
"""

from __future__ import annotations

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from distilkit.audit._common import pyplot, save_figure, to_original_pixels
from distilkit.audit._loo import LOO_STRATEGIES, influence_from_losses, loo_test_losses, spearman, tracin
from distilkit.audit._real_runs import STUDY_DISTILLED, balanced_subsample, seeded_model, test_split
from distilkit.audit._registry import AuditContext, AuditResult, Table, register_audit
from distilkit.audit._stats import OPEN, outcome_from_test, paired_test, sign_test_p, two_proportion_p
from distilkit.audit.recognition import panel_protocol
from distilkit.data.real import RealData
from distilkit.distilled import DistilledSet
from distilkit.errors import ConfigError
from distilkit.outputs import write_atomic
from distilkit.real_models import penultimate
from distilkit.seeding import derive_seed
from distilkit.seeding import generator as seed_generator
from distilkit.train import TrainConfig

ESTIMATORS = ("auto", "exact", "tracin")
TRACIN_MIN_SPEARMAN = 0.5
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
        small_exact = influence
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
    return influence, correlation, int(subset.numel()), small_exact, subset


def top_k_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """[N]: the share of row i's top-k columns of ``a`` that are also among its top-k of ``b``."""
    k = min(k, a.shape[1])
    top_a, top_b = a.topk(k, dim=1).indices, b.topk(k, dim=1).indices
    return (top_a.unsqueeze(2) == top_b.unsqueeze(1)).any(2).float().mean(1)


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


def _check(cfg: dict) -> None:
    """Refuse options no run can use, before any model trains."""
    if cfg["estimator"] not in ESTIMATORS:
        raise ConfigError(f"influence: unknown estimator {cfg['estimator']!r}; choose from {', '.join(ESTIMATORS)}")
    if cfg["strategy"] not in LOO_STRATEGIES:
        raise ConfigError(f"influence: unknown strategy {cfg['strategy']!r}; choose from {', '.join(LOO_STRATEGIES)}")
    if int(cfg["inits"]) < 1:
        raise ConfigError("influence: inits must be at least 1 (2 or more give the noise floor)")


@register_audit(
    "influence", question=3, summary="leave-one-out influence of each distilled image; semantics of its top-k",
    distributed=True, check=_check,
    defaults={"model": "convnet", "protocol": STUDY_DISTILLED, "estimator": "auto", "exact_limit": 1000,
              "check_size": 50, "tracin_checkpoints": 30, "top_k": 9, "test_subsample": None, "model_chunk": 16,
              "strategy": "auto", "coherence_model": "convnet", "coherence_epochs": 40, "random_sets": 50,
              "max_class_figures": 10, "random_real_baseline": True, "inits": 2, "resamples": 2000},
    presets={"cpu": {"model": "convnet-w16", "protocol": {**STUDY_DISTILLED, "iterations": 60},
                     "test_subsample": 500, "coherence_model": "convnet-w32", "coherence_epochs": 5},
             "smoke": {"model": "convnet-w8-d2", "protocol": {**STUDY_DISTILLED, "iterations": 4},
                       "test_subsample": 60, "top_k": 3, "check_size": 6, "tracin_checkpoints": 2,
                       "coherence_model": "convnet-w8-d2", "coherence_epochs": 1, "random_sets": 3,
                       "max_class_figures": 2}},
)
def audit_influence(dset: DistilledSet, real: RealData, cfg: dict, ctx: AuditContext) -> AuditResult:
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
    repeats = []  # the noise floor: exact LOO from further inits, on the images exact LOO covers
    covered = torch.arange(n) if estimator == "exact" else balanced_subsample(
        labels, max(1, cfg["check_size"] // dset.num_classes), ctx.seed)
    for i in range(1, int(cfg["inits"])):
        other = seeded_model(cfg["model"], real, ctx.seed, "loo", i)  # init i of the noise floor
        repeats.append(exact_influence(images[covered], targets[covered], test_images, test_labels, other, protocol,
                                       cfg, lr, ctx.accelerator))
    if measured is None:  # not the main process: its share of the leave-one-out models is done
        return AuditResult(summary={}, verdict="")
    influence, correlation, checked, exact_checked, _ = measured

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {"influence": influence.contiguous(), "distilled_labels": labels.contiguous(),
               "test_labels": test_labels.contiguous()}
    if baseline is not None:
        tensors |= {"random_real_influence": baseline[0].contiguous(), "random_real_labels": base_labels.contiguous()}
    write_atomic(ctx.out_dir / ARTIFACT, lambda tmp: save_file(tensors, str(tmp), metadata={
        "estimator": estimator, "definition": "loss_t(without i) - loss_t(with all)"}))

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
    tests = []
    above = round(summary["share_more_coherent_than_class_matched"] * n)
    tests.append({"claim": "each image's top-k shares a sub-concept beyond its classes",
                  "statistic": "share of images whose top-k is more coherent than class-matched random sets",
                  "estimate": summary["share_more_coherent_than_class_matched"], "ci": None,
                  "p": summary["sign_test_p_class_matched"], "effect": round(2 * above / n - 1, 4), "n": n,
                  "method": "two-sided exact sign test against 1/2, α = 0.05",
                  "outcome": outcome_from_test(summary["sign_test_p_class_matched"], 2 * above / n - 1, +1)})
    loo_vs_loo = None
    if repeats:
        overlaps = torch.stack([top_k_overlap(exact_checked, again, k) for again in repeats]).mean(0)
        chance = min(k, test_labels.numel()) / test_labels.numel()
        loo_vs_loo = sum(spearman(exact_checked, again) for again in repeats) / len(repeats)
        floor = paired_test("top-k sets are reproducible across initialisations",
                            f"top-{top.shape[1]} overlap between LOO inits minus chance ({chance:.3f})",
                            (overlaps - chance).tolist(), +1, seed=ctx.seed, resamples=int(cfg["resamples"]),
                            unit="distilled images")
        tests.append(floor)
        summary |= {"noise_floor/inits": int(cfg["inits"]), "noise_floor/images": int(covered.numel()),
                    "noise_floor/top_k_overlap": round(overlaps.mean().item(), 4),
                    "noise_floor/chance_overlap": round(chance, 4), "noise_floor/overlap_minus_chance_ci": floor["ci"],
                    "noise_floor/loo_vs_loo_spearman": round(loo_vs_loo, 4), "noise_floor/outcome": floor["outcome"]}
    substitute = correlation >= TRACIN_MIN_SPEARMAN and (loo_vs_loo is None or correlation >= loo_vs_loo)
    summary["tracin_substitute"] = bool(substitute)
    summary["tracin_rule"] = (f"TracIn substitutes for exact LOO only if its Spearman with LOO is "
                              f"≥ {TRACIN_MIN_SPEARMAN} and ≥ the LOO-vs-LOO Spearman between inits")
    if estimator == "tracin" and not substitute:
        tests[0]["outcome"] = OPEN  # the scores come from an estimator that does not track leave-one-out here
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
    if repeats:
        tables.insert(1, Table("Noise floor: exact leave-one-out from another initialisation",
                               ["measure", "value"],
                               [["inits", summary["noise_floor/inits"]],
                                ["images compared", summary["noise_floor/images"]],
                                [f"mean top-{top.shape[1]} overlap between inits",
                                 summary["noise_floor/top_k_overlap"]],
                                ["chance overlap", summary["noise_floor/chance_overlap"]],
                                ["95% CI of overlap − chance", str(summary["noise_floor/overlap_minus_chance_ci"])],
                                ["Spearman LOO vs LOO (between inits)", summary["noise_floor/loo_vs_loo_spearman"]],
                                ["Spearman TracIn vs LOO", summary["tracin_vs_exact_spearman"]]]))
    series = {"coherence": stats["coherence"].tolist(), "class_matched": stats["matched"].tolist(),
              "purity": stats["purity"].tolist()}
    return AuditResult(summary=summary, verdict=_verdict(summary, top.shape[1], correlation, checked, tests),
                       tables=tables, figures=figures, artifacts=[f"{ctx.out_dir.name}/{ARTIFACT}"], tests=tests,
                       series=series)


def _verdict(summary: dict, k: int, correlation: float, checked: int, tests: list[dict]) -> str:
    same_class = summary["coherence_top_k"] > summary["coherence_random_same_class"]
    outcome = tests[0]["outcome"]
    said = {"holds": "as the study found", "does not hold": "unlike the study's finding"}.get(
        outcome, "so the study's finding is open")
    verdict = (f"Each distilled image's top-{k} influenced test images are "
               f"{100 * summary['class_purity']:.0f}% its own class (chance {100 * summary['chance_purity']:.0f}%); "
               f"their features are {'more' if same_class else 'less'} alike than random same-class sets "
               f"(cosine {summary['coherence_top_k']:.3f} vs {summary['coherence_random_same_class']:.3f}); against "
               f"random sets with the same class make-up ({summary['coherence_random_class_matched']:.3f}) "
               f"{100 * summary['share_more_coherent_than_class_matched']:.0f}% of images are more alike, sign test "
               f"p = {summary['sign_test_p_class_matched']:.2g}: the study's finding (sub-concepts beyond classes) "
               f"{outcome} ({said}).")
    if "noise_floor/top_k_overlap" in summary:
        verdict += (f" Noise floor: from another initialisation exact leave-one-out shares "
                    f"{100 * summary['noise_floor/top_k_overlap']:.0f}% of each top-{k} (chance "
                    f"{100 * summary['noise_floor/chance_overlap']:.0f}%; overlap − chance 95% CI "
                    f"[{summary['noise_floor/overlap_minus_chance_ci'][0]:+.3f}, "
                    f"{summary['noise_floor/overlap_minus_chance_ci'][1]:+.3f}], so reproducibility across inits "
                    f"{summary['noise_floor/outcome']}; LOO-vs-LOO Spearman "
                    f"{summary['noise_floor/loo_vs_loo_spearman']:.2f}).")
    if "random_real/class_purity" in summary:
        share, base_share = summary["share_more_coherent_than_class_matched"], \
            summary["random_real/share_more_coherent_than_class_matched"]
        p_diff = summary["difference_p_vs_random_real"]
        verdict += (f" Random real images of the same number show {100 * base_share:.0f}% (sign test p = "
                    f"{summary['random_real/sign_test_p_class_matched']:.2g}); the difference has p = {p_diff:.2g}, so "
                    + (f"the pattern is {'stronger' if share > base_share else 'weaker'} for the distilled set."
                       if p_diff < 0.05 else "the distilled set is not distinguishable from a small real training "
                                             "set in this respect."))
    role = "the estimator" if summary["estimator"] == "tracin" else "not used"
    verdict += (f" TracIn ({role}) vs exact leave-one-out: Spearman {correlation:.2f} ({checked} images); "
                + ("it tracks LOO well enough to stand in for it." if summary["tracin_substitute"] else
                   "too low to substitute for leave-one-out (rule: ≥ 0.5 and ≥ the LOO-vs-LOO Spearman)"
                   + (", so the semantic scores above are not evidence." if summary["estimator"] == "tracin"
                      else "."))
                )
    return verdict


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
