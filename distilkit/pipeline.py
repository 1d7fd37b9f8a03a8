"""``distill``: resolve the run, load the real data, run the method, save the distilled set."""

from __future__ import annotations

import contextlib
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
from distilkit.data.real import RealData
from distilkit.data.sources import load_real
from distilkit.distilled import DistilledSet
from distilkit.errors import DistilkitError
from distilkit.hub.experts import fetch_hub_inputs
from distilkit.methods import RunContext, get_method
from distilkit.methods.registry import dataset_families
from distilkit.outputs import FolderLock, check_output_folder, check_replaceable
from distilkit.runtime import describe_hardware, distilkit_version, make_accelerator


def default_out(cfg: DistillConfig) -> Path:
    source = cfg.source.source
    name = "fashion-mnist" if source == "embedded" else Path(source.rstrip("/")).name
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "set"
    return Path("distilled") / f"{slug}-{cfg.method}-ipc{cfg.ipc}"


def check_fits(real: RealData, method: str, ipc: int, method_cfg: dict) -> None:
    """Refuse a run the smallest class cannot feed: ``ipc`` images per class, and the ``batch_real``
    real images per class that every method with that option draws each step."""
    smallest = int(real.class_counts.min())
    if ipc > smallest:
        raise DistilkitError(f"--ipc {ipc} is larger than the smallest class "
                             f"({real.class_names[int(real.class_counts.argmin())]!r}: {smallest} images)")
    if "batch_real" in method_cfg:
        real.require_per_class(int(method_cfg["batch_real"]), f"{method}: batch_real")


def checkpoint_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.checkpoint"


def distill(cfg: DistillConfig, accelerator=None, resume: bool = False, overwrite: bool = False) -> Path:
    """Run ``cfg`` end to end and return the folder of the saved distilled set."""
    cfg.check()
    spec = get_method(cfg.method)
    # bad method_args fail before any loading; the dataset-family layer is applied once the data is known
    method_cfg = spec.resolve(cfg.preset, cfg.ipc, cfg.method_args)
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    if overwrite:
        check_replaceable(out, protected=_local_inputs(cfg, method_cfg))
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DistilkitError(f"output folder {out} exists and is not empty; pass --overwrite or choose --out")
    check_output_folder(out, "--out")
    accelerator = accelerator or make_accelerator()
    # One run per output folder: the lock is held until the set is saved (another run fails at once).
    with FolderLock(out, "distill") if accelerator.is_main_process else contextlib.nullcontext():
        return _distill(cfg, spec, out, accelerator, resume, overwrite)


def _local_inputs(cfg: DistillConfig, method_cfg: dict) -> list[str]:
    """Local paths the run reads (the source, an experts folder): --overwrite never replaces them."""
    paths = [cfg.source.source]
    experts = method_cfg.get("experts")
    if isinstance(experts, str) and not experts.startswith("hf://"):
        paths.append(experts)
    return [p for p in paths if p and Path(p).expanduser().exists()]


def _distill(cfg: DistillConfig, spec, out: Path, accelerator, resume: bool, overwrite: bool) -> Path:
    with accelerator.main_process_first():
        real = load_real(cfg.source, cfg.pixel_space or "normalized", cfg.seed, cfg.zca_eps)
    families = dataset_families(real)
    wanted = spec.default_pixel_space(families)
    if cfg.pixel_space is None and wanted not in (None, real.pixel_space.kind):
        with accelerator.main_process_first():  # the method's pixel space for this kind of data (e.g. MTT: ZCA)
            real = load_real(cfg.source, wanted, cfg.seed, cfg.zca_eps)
    cfg = dataclasses.replace(cfg, pixel_space=real.pixel_space.kind)
    method_cfg = spec.resolve(cfg.preset, cfg.ipc, cfg.method_args, families)
    check_fits(real, cfg.method, cfg.ipc, method_cfg)
    run_cfg = fetch_hub_inputs(method_cfg, accelerator=accelerator)  # hf:// -> local folders

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
    output = spec.fn(real, cfg.ipc, run_cfg, ctx)
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
        try:
            dset.save(out, overwrite=overwrite)
        except OSError as err:
            kept = (f"; the run's checkpoint is kept in {ckpt_dir}: fix that and rerun with --resume"
                    if (ckpt_dir / "state.json").is_file() else "")
            raise DistilkitError(f"could not write {out}: {err.strerror or err}{kept}") from None
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    return out
