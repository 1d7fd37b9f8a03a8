"""ZCA whitening of (normalised) images, the pixel space of KIP, FRePo and MTT's CIFAR runs.

The matrix is fitted on the real train split, ``W = U diag(1 / sqrt(S + eps)) U^T`` from the
eigendecomposition of the pixel covariance (kornia's convention, ``eps = 0.1`` by default), and
stored as safetensors next to a distilled set so anyone can map real data into the same space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


@dataclass
class ZCA:
    mean: torch.Tensor  # [D]
    matrix: torch.Tensor  # [D, D], symmetric
    eps: float

    @classmethod
    def fit(cls, images: torch.Tensor, eps: float = 0.1) -> ZCA:
        """Fit on float images [N, C, H, W] (already normalised)."""
        flat = images.reshape(images.shape[0], -1).double()
        mean = flat.mean(0)
        centered = flat - mean
        cov = centered.T @ centered / flat.shape[0]
        eigvals, eigvecs = torch.linalg.eigh(cov)
        scale = (eigvals.clamp(min=0) + eps).rsqrt()
        matrix = (eigvecs * scale) @ eigvecs.T
        return cls(mean=mean.float(), matrix=matrix.float(), eps=eps)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.reshape(images.shape[0], -1)
        out = (flat - self.mean.to(flat)) @ self.matrix.to(flat)
        return out.reshape(images.shape)

    def save(self, path: Path) -> None:
        save_file({"mean": self.mean.contiguous(), "matrix": self.matrix.contiguous()}, str(path),
                  metadata={"eps": repr(self.eps), "convention": "x_zca = (x - mean) @ matrix"})

    @classmethod
    def load(cls, path: Path, eps: float) -> ZCA:
        tensors = load_file(str(path))
        return cls(mean=tensors["mean"], matrix=tensors["matrix"], eps=eps)
