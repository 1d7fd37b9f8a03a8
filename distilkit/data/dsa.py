"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021), vectorised.

One augmentation "group" (color, crop, cutout, flip, scale, rotate) is picked per call, as in the
reference 'S' mode. Parameters are drawn per *siamese group*: every sample that carries the same
group id gets the same transformation. Distribution and gradient matching give the real and the
synthetic images of one class the same group id (and reuse the same drawn parameters for both
batches), which reproduces the reference's "same seed for real and synthetic" while handling all
classes in one call. Training-time augmentation uses one group per sample.

All randomness comes from an explicit ``torch.Generator``, so runs are reproducible and resumable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distilkit.errors import ConfigError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DIGIT_STRATEGY = "color_crop_cutout_scale_rotate"  # DSA README: flip is not good for digit datasets


def is_digit_dataset(source_id: str) -> bool:
    """Whether a source id names a digit dataset (MNIST, SVHN, USPS; not Fashion- or Kuzushiji-MNIST)."""
    name = source_id.lower()
    if any(other in name for other in ("fashion", "kmnist", "kuzushiji")):
        return False
    return "svhn" in name or "usps" in name or re.search(r"(?<![a-z])e?mnist", name) is not None
GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
SCALE_RATIO = 1.2
ROTATE_DEGREES = 15.0
CROP_PAD_RATIO = 0.125
CUTOUT_RATIO = 0.5
BRIGHTNESS, SATURATION, CONTRAST = 1.0, 2.0, 0.5
FLIP_PROB = 0.5


@dataclass
class DSAParams:
    """Random draws for ``n`` siamese groups: ``op[g]`` indexes the strategy, ``u[g]`` uniforms."""

    op: torch.Tensor  # long [n]
    u: torch.Tensor  # float [n, 3]


class DSA:
    """Differentiable augmentation with a fixed strategy (``_``-separated group names)."""

    def __init__(self, strategy: str = DEFAULT_STRATEGY) -> None:
        names = [s for s in strategy.split("_") if s]
        unknown = [s for s in names if s not in GROUPS]
        if unknown or not names:
            raise ConfigError(f"unknown DSA strategy {strategy!r}; groups are {', '.join(GROUPS)}")
        self.strategy = strategy
        self.ops = names

    def sample(self, num_groups: int, generator: torch.Generator, one_op: bool = False) -> DSAParams:
        """Draw parameters for ``num_groups`` siamese groups (``one_op``: same group for all)."""
        count = 1 if one_op else num_groups
        op = torch.randint(len(self.ops), (count,), generator=generator).expand(num_groups).contiguous()
        u = torch.rand(num_groups, 3, generator=generator)
        return DSAParams(op=op, u=u)

    def __call__(self, x: torch.Tensor, params: DSAParams, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Augment ``x`` [N, C, H, W]; sample i uses parameter set ``groups[i]`` (default: i)."""
        groups = torch.arange(x.shape[0]) if groups is None else groups.cpu()
        op = params.op[groups]
        u = params.u[groups].to(x.device, x.dtype)
        out = x
        for k in op.unique().tolist():
            idx = (op == k).nonzero().squeeze(1)
            fn = getattr(self, "_" + self.ops[k])
            picked = fn(x[idx.to(x.device)], u[idx.to(x.device)])
            out = picked if len(idx) == x.shape[0] else out.index_copy(0, idx.to(x.device), picked)
        return out

    @staticmethod
    def _color(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        view = (-1, 1, 1, 1)
        x = x + (u[:, 0].view(view) - 0.5) * BRIGHTNESS
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (u[:, 1].view(view) * SATURATION) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (u[:, 2].view(view) + CONTRAST) + mean

    @staticmethod
    def _crop(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        shift_h, shift_w = int(h * CROP_PAD_RATIO + 0.5), int(w * CROP_PAD_RATIO + 0.5)
        tx = (u[:, 0] * (2 * shift_h + 1)).long().clamp(max=2 * shift_h) - shift_h
        ty = (u[:, 1] * (2 * shift_w + 1)).long().clamp(max=2 * shift_w) - shift_w
        rows = (torch.arange(h, device=x.device).view(1, h, 1) + tx.view(n, 1, 1) + 1).clamp(0, h + 1)
        cols = (torch.arange(w, device=x.device).view(1, 1, w) + ty.view(n, 1, 1) + 1).clamp(0, w + 1)
        padded = F.pad(x, (1, 1, 1, 1))
        batch = torch.arange(n, device=x.device).view(n, 1, 1)
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)

    @staticmethod
    def _cutout(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        cut_h, cut_w = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
        off_h = (u[:, 0] * (h + (1 - cut_h % 2))).long() - cut_h // 2
        off_w = (u[:, 1] * (w + (1 - cut_w % 2))).long() - cut_w // 2
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = ((rows >= off_h.view(n, 1, 1)) & (rows < off_h.view(n, 1, 1) + cut_h)
                  & (cols >= off_w.view(n, 1, 1)) & (cols < off_w.view(n, 1, 1) + cut_w))
        return x * (~inside).unsqueeze(1).to(x.dtype)

    @staticmethod
    def _flip(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.where((u[:, 0] < FLIP_PROB).view(-1, 1, 1, 1), x.flip(3), x)

    @staticmethod
    def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)

    def _scale(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        lo = 1.0 / SCALE_RATIO
        sx, sy = u[:, 0] * (SCALE_RATIO - lo) + lo, u[:, 1] * (SCALE_RATIO - lo) + lo
        zero = torch.zeros_like(sx)
        theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
        return self._affine(x, theta)

    def _rotate(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        angle = (u[:, 0] - 0.5) * 2 * ROTATE_DEGREES / 180 * math.pi
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)
        return self._affine(x, theta)
