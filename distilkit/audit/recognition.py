"""Q1 ``recognition``: do classifiers trained on real data recognise the distilled images?

A panel of real-trained models (cached) classifies the distilled images; reported per model: real
test accuracy (reference), accuracy on the distilled set, per-class accuracy. In the penultimate
feature space of the first panel model: the share of distilled images whose nearest real class
centroid (of real test features) is their own class, and a 2-D PCA projection of real test images
and distilled images (PCA rather than the study's UMAP, which would add a heavy dependency).
The ``paper`` panel is the study's: ConvNet (40 epochs), ConvNet width 16 (20 epochs), ResNet-18
and ResNet-34 (timm, 40 epochs each). The ``cpu`` preset replaces the ResNets by timm's ResNet-10-T
for three epochs (a ResNet-18 step on 256 images takes ~25 s on two cores).
"""

from __future__ import annotations

import torch

from distilkit.audit._common import pyplot, save_figure
from distilkit.audit._registry import AuditContext, AuditResult, Table, register_audit
from distilkit.data.real import RealData
from distilkit.distilled import DistilledSet
from distilkit.errors import ConfigError
from distilkit.real_models import penultimate
from distilkit.seeding import generator as seed_generator
from distilkit.train import TrainConfig

REAL_PROTOCOL = {"batch_size": 256, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "dsa": False,
                 "lr_schedule": "step_half"}


def panel_protocol(model: str, epochs: int) -> TrainConfig:
    return TrainConfig(model=model, epochs=epochs, **REAL_PROTOCOL)


def _check(cfg: dict) -> None:
    if len(cfg["panel"]) != len(cfg["epochs"]):
        raise ConfigError(f"recognition: panel and epochs must have the same length, got {len(cfg['panel'])} "
                          f"models and {len(cfg['epochs'])} epoch counts")


@register_audit(
    "recognition", question=1, summary="real-trained classifiers score the distilled images", check=_check,
    defaults={"panel": ["convnet", "convnet-w16", "timm/resnet18", "timm/resnet34"], "epochs": [40, 20, 40, 40],
              "projection_points": 1000},
    presets={"cpu": {"panel": ["convnet-w32", "convnet-w16", "timm/resnet10t"], "epochs": [5, 5, 3]},
             "smoke": {"panel": ["convnet-w8-d2"], "epochs": [1], "projection_points": 200}},
)
def audit_recognition(dset: DistilledSet, real: RealData, cfg: dict, ctx: AuditContext) -> AuditResult:
    images, labels = dset.images, dset.labels
    test_images, test_labels = real.test_set()
    rows, per_class_rows, summary = [], [], {}
    first_model = None
    for name, epochs in zip(cfg["panel"], cfg["epochs"], strict=True):
        model, test_acc = ctx.models.get(real, name, panel_protocol(name, epochs), ctx.seed, ctx.device)
        with torch.no_grad():
            pred = model(images.to(ctx.device)).argmax(1).cpu()
        correct = (pred == labels).float()
        acc = correct.mean().item()
        per_class = torch.zeros(dset.num_classes).index_add_(0, labels, correct) / torch.bincount(
            labels, minlength=dset.num_classes).clamp(min=1)
        rows.append([name, epochs, round(test_acc, 4), round(acc, 4)])
        per_class_rows.append([name] + [round(v, 3) for v in per_class.tolist()])
        summary[f"{name}/distilled_accuracy"] = round(acc, 4)
        summary[f"{name}/real_test_accuracy"] = round(test_acc, 4)
        first_model = first_model or model
    mean_acc = sum(r[3] for r in rows) / len(rows)
    summary["mean_distilled_accuracy"] = round(mean_acc, 4)
    summary["chance"] = round(1 / dset.num_classes, 4)

    with torch.no_grad():
        real_feats = torch.cat([penultimate(first_model, part.to(ctx.device)).cpu()
                                for part in test_images.split(1000)])
        syn_feats = penultimate(first_model, images.to(ctx.device)).cpu()
    centroids = torch.zeros(dset.num_classes, real_feats.shape[1]).index_add_(0, test_labels, real_feats)
    centroids /= torch.bincount(test_labels, minlength=dset.num_classes).clamp(min=1).unsqueeze(1)
    nearest = torch.cdist(syn_feats, centroids).argmin(1)
    summary["nearest_real_centroid_is_own_class"] = round((nearest == labels).float().mean().item(), 4)

    n = min(cfg["projection_points"], real_feats.shape[0])
    pick = torch.randperm(real_feats.shape[0], generator=seed_generator("recognition-projection", ctx.seed))[:n]
    both = torch.cat([real_feats[pick], syn_feats])
    centered = both - both.mean(0)
    _, _, v = torch.linalg.svd(centered, full_matrices=False)
    proj = centered @ v[:2].T
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab10" if dset.num_classes <= 10 else "tab20")
    ax.scatter(proj[:n, 0], proj[:n, 1], c=[cmap(int(c) % cmap.N) for c in test_labels[pick]], s=6, alpha=0.35)
    ax.scatter(proj[n:, 0], proj[n:, 1], c=[cmap(int(c) % cmap.N) for c in labels], s=70, marker="*",
               edgecolors="black", linewidths=0.6)
    ax.set_title(f"PCA of {cfg['panel'][0]} features: real test (dots) and distilled (stars)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    figure = save_figure(fig, ctx.out_dir, "recognition_projection.png")

    verdict = (f"Real-trained classifiers recognise {100 * mean_acc:.1f}% of the distilled images on average "
               f"(chance {100 / dset.num_classes:.0f}%); {100 * summary['nearest_real_centroid_is_own_class']:.0f}% "
               "lie nearest to their own class's real feature centroid.")
    tables = [Table("Real-trained classifiers on the distilled images",
                    ["model", "epochs on real", "real test accuracy", "accuracy on distilled"], rows),
              Table("Per-class accuracy on the distilled images", ["model"] + dset.class_names, per_class_rows)]
    return AuditResult(summary=summary, verdict=verdict, tables=tables, figures=[figure])
