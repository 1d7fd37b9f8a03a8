"""Shared helpers for methods that learn synthetic images."""

from __future__ import annotations

import torch

from distilkit.data.real import RealData
from distilkit.errors import DistilkitError
from distilkit.methods._learnable import label_logits
from distilkit.methods._registry import RunContext


def initial_images(real: RealData, ipc: int, init: str, generator: torch.Generator) -> torch.Tensor:
    """Class-major starting images: ``real`` (random real images per class) or ``noise`` (N(0, 1))."""
    if init == "real":
        return real.batch(real.sample_per_class(ipc, generator).reshape(-1)).clone()
    if init == "noise":
        c, h, w = real.image_shape
        return torch.randn(real.num_classes * ipc, c, h, w, generator=generator)
    raise DistilkitError(f"unknown init {init!r}; choose 'real' or 'noise'")


def learnable_images(real: RealData, ipc: int, init: str, ctx: RunContext) -> tuple[torch.Tensor, torch.Tensor]:
    """A learning method's starting set: class-major hard labels and :func:`initial_images` drawn
    from the run's setup generator (``ctx.step_generator(-1)``), on the run's device, requiring grad."""
    labels = torch.arange(real.num_classes).repeat_interleave(ipc)
    images = initial_images(real, ipc, init, ctx.step_generator(-1)).to(ctx.device).requires_grad_(True)
    return labels, images


def learnable_images_and_logits(real: RealData, ipc: int, cfg: dict,
                                ctx: RunContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`learnable_images` plus label logits for methods that learn soft labels: hard labels
    as :func:`label_logits` at ``cfg["label_confidence"]``, requiring grad when ``cfg["learn_labels"]``."""
    labels, images = learnable_images(real, ipc, cfg["init"], ctx)
    logits = label_logits(labels, real.num_classes, cfg["label_confidence"]).to(ctx.device)
    return labels, images, logits.requires_grad_(cfg["learn_labels"])
