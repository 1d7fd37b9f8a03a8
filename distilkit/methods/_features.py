"""Embeddings of the real train set for the selection baselines (herding, k-center).

As in the DC paper's baselines, features come from a ConvNet trained on the real data (a few
epochs, seeded); selection then runs per class on the penultimate features. Features are returned
class-major and padded to ``[K, max_count, D]`` with a validity mask so that greedy selection runs
for all classes at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from distilkit.data.real import RealData
from distilkit.methods._registry import MethodOutput, RunContext, method_tables, register_method
from distilkit.seeding import seeded_model
from distilkit.train import TrainConfig, train_model

SELECTION_TABLES = method_tables(__file__)  # _features.yaml: family, the feature network's options


def register_selection(name: str, summary: str, citation: str) -> Callable:
    """Register a selection baseline that picks real images by their features (:func:`class_features`):
    the selection family, the feature network's options and presets, and the ConvNet embedding it needs."""
    tables = {**SELECTION_TABLES, "defaults": dict(SELECTION_TABLES["defaults"]), "citation": citation}
    return register_method(name, summary=summary, **tables)


def class_features(real: RealData, cfg: dict, ctx: RunContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Train a feature ConvNet on real data; return padded features [K, M, D] and mask [K, M]."""
    net = seeded_model(cfg["model"], real, ctx.seed)
    if cfg["feature_epochs"] > 0:
        protocol = TrainConfig(model=cfg["model"], epochs=cfg["feature_epochs"], batch_size=cfg["feature_batch"],
                               lr=0.01, momentum=0.9, weight_decay=5e-4, dsa=False)
        images = real.batch(torch.arange(real.train_images.shape[0]))
        train_model(net, images, real.train_labels, protocol, torch.Generator().manual_seed(ctx.seed),
                    device=ctx.device)
    net.eval()
    order = real.class_order
    with torch.no_grad():
        feats = torch.cat([net.embed(real.batch(order[s : s + 1024]).to(ctx.device)).cpu()
                           for s in range(0, len(order), 1024)])
    max_count = int(real.class_counts.max())
    slot = torch.arange(len(order)) - real.class_offsets[real.train_labels[order]]
    padded = torch.zeros(real.num_classes, max_count, feats.shape[1])
    padded[real.train_labels[order], slot] = feats
    mask = torch.arange(max_count).unsqueeze(0) < real.class_counts.unsqueeze(1)
    return padded, mask


def output_from_slots(real: RealData, slots: torch.Tensor) -> MethodOutput:
    """Selected per-class slots [K, ipc] (positions within each class) -> a MethodOutput."""
    indices = real.class_order[real.class_offsets.unsqueeze(1) + slots].reshape(-1)
    labels = torch.arange(real.num_classes).repeat_interleave(slots.shape[1])
    return MethodOutput(images=real.batch(indices).clone(), labels=labels,
                        history={"selected_indices": indices.tolist()})
