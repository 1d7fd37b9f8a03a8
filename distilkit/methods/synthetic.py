"""Shared helpers for methods that learn synthetic images."""

from __future__ import annotations

import torch

from distilkit.data.real import RealData
from distilkit.errors import DistilkitError


def initial_images(real: RealData, ipc: int, init: str, generator: torch.Generator) -> torch.Tensor:
    """Class-major starting images: ``real`` (random real images per class) or ``noise`` (N(0, 1))."""
    if init == "real":
        return real.batch(real.sample_per_class(ipc, generator).reshape(-1)).clone()
    if init == "noise":
        c, h, w = real.image_shape
        return torch.randn(real.num_classes * ipc, c, h, w, generator=generator)
    raise DistilkitError(f"unknown init {init!r}; choose 'real' or 'noise'")
