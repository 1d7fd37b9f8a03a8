"""Helpers shared by audits: original-pixel-space mapping and figures."""

from __future__ import annotations

from pathlib import Path

import torch

from distilkit.data.pixel_space import PixelSpace


def to_original_pixels(images: torch.Tensor, space: PixelSpace) -> torch.Tensor:
    """Map images of ``space`` back to the [0, 1] pixel scale (un-ZCA'd and un-normalised)."""
    x = images.float()
    if space.kind == "zca":
        flat = x.reshape(x.shape[0], -1)
        # x_zca = (x_norm - m) @ W with W symmetric  =>  x_norm = x_zca @ W^-1 + m
        x = (torch.linalg.solve(space.zca.matrix.double(), flat.double().T).T.float()
             + space.zca.mean).reshape(images.shape)
    if space.kind in ("normalized", "zca"):
        mean = torch.tensor(space.mean).view(1, -1, 1, 1)
        std = torch.tensor(space.std).view(1, -1, 1, 1)
        x = x * std + mean
    return x


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_dir: Path, name: str) -> str:
    """Save under a temporary name and rename (atomic); return the path relative to the set folder."""
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.tmp.png"
    fig.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(out_dir / name)
    return f"{out_dir.name}/{name}"
