"""Figures a person would rather look at than read (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distilkit.distilled import DistilledSet

MAX_ROWS, MAX_COLS = 10, 10


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_preview(dset: DistilledSet, path: Path) -> None:
    """A grid, one row per class (first 10 classes, first 10 images each), per-image min-max scaled
    for ZCA sets and clipped to [0, 1] otherwise."""
    plt = _figure()
    classes = list(range(min(dset.num_classes, MAX_ROWS)))
    rows = [(dset.labels == c).nonzero().squeeze(1)[:MAX_COLS] for c in classes]
    cols = max(1, max(len(r) for r in rows))
    fig, axes = plt.subplots(len(classes), cols, figsize=(cols * 0.9 + 1.6, len(classes) * 0.9 + 0.3),
                             squeeze=False)
    unit = dset.pixel_space.to_unit(dset.images)
    if dset.pixel_space.kind == "zca":
        flat = unit.flatten(1)
        lo, hi = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
        unit = (unit - lo) / (hi - lo).clamp(min=1e-8)
    unit = unit.clamp(0, 1)
    for r, (c, idx) in enumerate(zip(classes, rows, strict=True)):
        for k in range(cols):
            ax = axes[r][k]
            ax.axis("off")
            if k < len(idx):
                img = unit[idx[k]].permute(1, 2, 0).numpy()
                ax.imshow(img.squeeze(2) if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None,
                          vmin=0, vmax=1)
        axes[r][0].text(-0.1, 0.5, dset.class_names[c][:14], transform=axes[r][0].transAxes, ha="right",
                        va="center", fontsize=8)
    fig.suptitle(f"{dset.method}, IPC {dset.ipc}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)

