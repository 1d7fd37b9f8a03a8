"""Figures a person would rather look at than read, drawn with matplotlib's object API.

Every figure is a :class:`matplotlib.figure.Figure` on its own Agg canvas: nothing goes through
``pyplot``, so drawing one switches no backend and registers no figure in pyplot's global list (a
notebook's inline plots stay as they were, and a figure is freed when it is no longer referenced).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

    from distilkit.distilled import DistilledSet

MAX_ROWS, MAX_COLS = 10, 10


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None,
             squeeze: bool = True, **kwargs: Any) -> tuple[Figure, Any]:
    """``pyplot.subplots`` without pyplot: a new figure on an Agg canvas and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze, **kwargs)


def get_cmap(name: str) -> Colormap:
    """The registered colormap ``name`` (``pyplot.get_cmap`` without pyplot)."""
    from matplotlib import colormaps

    return colormaps[name]


def save_preview(dset: DistilledSet, path: Path) -> None:
    """A grid, one row per class (first 10 classes, first 10 images each), per-image min-max scaled
    for ZCA sets and clipped to [0, 1] otherwise."""
    classes = list(range(min(dset.num_classes, MAX_ROWS)))
    rows = [(dset.labels == c).nonzero().squeeze(1)[:MAX_COLS] for c in classes]
    cols = max(1, max(len(r) for r in rows))
    fig, axes = subplots(len(classes), cols, figsize=(cols * 0.9 + 1.6, len(classes) * 0.9 + 0.3), squeeze=False)
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
