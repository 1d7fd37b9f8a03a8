"""Helpers shared by audits: work split across processes, original-pixel-space mapping, figures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from distilkit.data.pixel_space import PixelSpace
from distilkit.outputs import write_atomic

Job = TypeVar("Job")


def share(accelerator: Any, jobs: Sequence[Job], run: Callable[[Job], Any], desc: str) -> list[Any]:
    """``[run(job) for job in jobs]``, with the jobs dealt round-robin to the Accelerate processes and
    the results gathered in job order on every process (each job must be seeded by itself)."""
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    local = [(i, run(jobs[i])) for i in tqdm(range(rank, len(jobs), world), desc=desc,
                                            disable=accelerator is not None and not accelerator.is_local_main_process)]
    if world > 1:
        from accelerate.utils import gather_object

        local = gather_object(local)
    return [result for _, result in sorted(local, key=lambda pair: pair[0])]


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
    """The figure calls the audits make (``subplots``, ``get_cmap``), shaped like pyplot's but drawn with
    matplotlib's object API (:mod:`distilkit.plots`): no backend switch, no global figure list."""
    from distilkit import plots

    return plots


def save_figure(fig, out_dir: Path, name: str) -> str:
    """Save under a temporary name and rename (atomic); return the path relative to the set folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / name, lambda tmp: fig.savefig(tmp, dpi=90, bbox_inches="tight"))
    return f"{out_dir.name}/{name}"
