"""k-center greedy selection (Sener & Savarese 2018) on ConvNet features, all classes at once.

Per class, start from the image closest to the class mean, then repeatedly add the image farthest
from its nearest selected center.
"""

from __future__ import annotations

import torch

from distilkit.data.real import RealData
from distilkit.methods._features import class_features, output_from_slots, register_selection
from distilkit.methods._registry import MethodOutput, RunContext


@register_selection(
    "kcenter",
    summary="greedy k-center coverage on real-trained ConvNet features (class-balanced)",
    citation="Sener, O. and Savarese, S. Active Learning for Convolutional Neural Networks: "
             "A Core-Set Approach. ICLR 2018.",
)
def select_kcenter(real: RealData, ipc: int, cfg: dict, ctx: RunContext) -> MethodOutput:
    feats, mask = class_features(real, cfg, ctx)
    rows = torch.arange(feats.shape[0])
    mean = (feats * mask.unsqueeze(2)).sum(1) / mask.sum(1, keepdim=True)
    to_mean = ((feats - mean.unsqueeze(1)) ** 2).sum(2).masked_fill(~mask, float("inf"))
    sq_norms = (feats**2).sum(2)

    def sq_dist_to(pick: torch.Tensor) -> torch.Tensor:  # [K, M] squared distances to each row's pick
        center = feats[rows, pick]
        return (sq_norms - 2 * torch.bmm(feats, center.unsqueeze(2)).squeeze(2)
                + (center**2).sum(1, keepdim=True)).clamp(min=0)

    pick = to_mean.argmin(1)
    picks = [pick]
    nearest = sq_dist_to(pick)
    for _ in range(ipc - 1):
        pick = nearest.masked_fill(~mask, -1.0).argmax(1)
        picks.append(pick)
        nearest = torch.minimum(nearest, sq_dist_to(pick))
    return output_from_slots(real, torch.stack(picks, 1))
