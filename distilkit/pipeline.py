"""``distill``: resolve the run, load the real data, run the method, save the distilled set."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import shutil
import time
from pathlib import Path

from distilkit.checkpoint import Checkpointer
from distilkit.config import DistillConfig
from distilkit.data.sources import load_real
from distilkit.distilled import DistilledSet
from distilkit.errors import DistilkitError
from distilkit.methods import RunContext, get_method
from distilkit.methods.registry import dataset_families
from distilkit.runtime import describe_hardware, distilkit_version, make_accelerator


def default_out(cfg: DistillConfig) -> Path:
    source = cfg.source.source
    name = "fashion-mnist" if source == "embedded" else Path(source.rstrip("/")).name
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "set"
    return Path("distilled") / f"{slug}-{cfg.method}-ipc{cfg.ipc}"


def checkpoint_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.checkpoint"


def distill(cfg: DistillConfig, accelerator=None, resume: bool = False, overwrite: bool = False) -> Path:
    """Run ``cfg`` end to end and return the folder of the saved distilled set."""
    accelerator = accelerator or make_accelerator()
    spec = get_method(cfg.method)
    spec.resolve(cfg.preset, cfg.ipc, cfg.method_args)  # bad method_args fail before any loading
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DistilkitError(f"output folder {out} exists and is not empty; pass --overwrite or choose --out")
    with accelerator.main_process_first():
        real = load_real(cfg.source, cfg.pixel_space or "normalized", cfg.seed, cfg.zca_eps)
    families = dataset_families(real)
    wanted = spec.default_pixel_space(families)
    if cfg.pixel_space is None and wanted not in (None, real.pixel_space.kind):
        with accelerator.main_process_first():  # the method's pixel space for this kind of data (e.g. MTT: ZCA)
            real = load_real(cfg.source, wanted, cfg.seed, cfg.zca_eps)
    cfg = dataclasses.replace(cfg, pixel_space=real.pixel_space.kind)
    method_cfg = spec.resolve(cfg.preset, cfg.ipc, cfg.method_args, families)
    smallest = int(real.class_counts.min())
    if cfg.ipc > smallest:
        raise DistilkitError(f"--ipc {cfg.ipc} is larger than the smallest class "
                             f"({real.class_names[int(real.class_counts.argmin())]!r}: {smallest} images)")

    resolved = {**cfg.to_dict(), "out": str(out), "method_args": method_cfg}
    fingerprint = hashlib.sha256(json.dumps({k: v for k, v in resolved.items() if k != "out"},
                                            sort_keys=True, default=str).encode()).hexdigest()[:16]
    ckpt_dir = checkpoint_dir(out)
    if not resume and accelerator.is_main_process and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    accelerator.wait_for_everyone()
    checkpointer = Checkpointer(ckpt_dir, fingerprint, every=int(method_cfg.get("checkpoint_every", 0)))
    ctx = RunContext(accelerator=accelerator, seed=cfg.seed, checkpointer=checkpointer, resume=resume)

    started = time.perf_counter()
    output = spec.fn(real, cfg.ipc, method_cfg, ctx)
    wall = time.perf_counter() - started
    dset = DistilledSet(
        images=output.images, labels=output.labels, class_names=real.class_names, pixel_space=real.pixel_space,
        method=cfg.method, ipc=cfg.ipc, soft_labels=output.soft_labels, learned_lr=output.learned_lr,
        config=resolved, source=real.info,
        provenance={"distilkit_version": distilkit_version(), "seed": cfg.seed, "wall_time_s": round(wall, 2),
                    "hardware": describe_hardware(accelerator), "preset": cfg.preset,
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "final_loss": output.history["loss"][-1] if output.history.get("loss") else None},
        history=output.history,
    )
    if accelerator.is_main_process:
        dset.save(out, overwrite=overwrite)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    return out
