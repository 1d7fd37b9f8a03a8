"""Herding selection (Welling 2009) on ConvNet features, all classes at once.

Greedy: at step t pick, per class, the unselected image whose addition brings the running mean of
the selected features closest to the class mean.
"""

from __future__ import annotations

import torch

from distilkit.data.real import RealData
from distilkit.methods._features import class_features, output_from_slots, register_selection
from distilkit.methods._registry import MethodOutput, RunContext


@register_selection(
    "herding",
    summary="greedy herding on real-trained ConvNet features (class-balanced)",
    citation="Welling, M. Herding Dynamical Weights to Learn. ICML 2009.",
)
def select_herding(real: RealData, ipc: int, cfg: dict, ctx: RunContext) -> MethodOutput:
    feats, mask = class_features(real, cfg, ctx)
    target = (feats * mask.unsqueeze(2)).sum(1) / mask.sum(1, keepdim=True)  # [K, D]
    available = mask.clone()
    running = torch.zeros_like(target)
    rows = torch.arange(feats.shape[0])
    picks = []
    sq_norms = (feats**2).sum(2)  # [K, M]
    for t in range(ipc):
        # ||(running + f) / (t+1) - target||^2 expanded, so no [K, M, D] temporary is built.
        offset = running / (t + 1) - target
        dist = (2 * torch.bmm(feats, offset.unsqueeze(2)).squeeze(2) / (t + 1)
                + sq_norms / (t + 1) ** 2 + (offset**2).sum(1, keepdim=True))
        dist[~available] = float("inf")
        pick = dist.argmin(1)
        picks.append(pick)
        available[rows, pick] = False
        running += feats[rows, pick]
    return output_from_slots(real, torch.stack(picks, 1))
