"""Distillation: resolve the run, load the real data, run the method, (save the distilled set).

One core serves both entry points: :func:`prepare_run` (resolve the config and the method's options,
load the real data, check that it can feed the run) and :func:`run_method` (run the method, build the
:class:`DistilledSet`). The command's :func:`distill` puts an output folder, its lock and a checkpoint
around them; the Python API's :func:`distilkit.api.distill` keeps the set in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilkit.checkpoint import Checkpointer
from distilkit.config import DistillConfig
from distilkit.data.real import RealData
from distilkit.data.sources import in_pixel_space, load_real
from distilkit.distilled import DistilledSet
from distilkit.errors import DistilkitError
from distilkit.hub.experts import fetch_hub_inputs
from distilkit.methods import MethodSpec, RunContext, get_method
from distilkit.methods._registry import dataset_families
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
        return _distill(cfg, out, accelerator, resume, overwrite)


def _local_inputs(cfg: DistillConfig, method_cfg: dict) -> list[str]:
    """Local paths the run reads (the source, an experts folder): --overwrite never replaces them."""
    paths = [cfg.source.source]
    experts = method_cfg.get("experts")
    if isinstance(experts, str) and not experts.startswith("hf://"):
        paths.append(experts)
    return [p for p in paths if p and Path(p).expanduser().exists()]


def _distill(cfg: DistillConfig, out: Path, accelerator, resume: bool, overwrite: bool) -> Path:
    run = prepare_run(cfg, accelerator)
    ckpt_dir = checkpoint_dir(out)
    if not resume and accelerator.is_main_process and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    accelerator.wait_for_everyone()
    checkpointer = Checkpointer(ckpt_dir, run.fingerprint, every=int(run.method_cfg.get("checkpoint_every", 0)))
    dset = run_method(run, accelerator, checkpointer, resume=resume, out=out)
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


@dataclass
class PreparedRun:
    """A run ready to start: its config (pixel space resolved), the method, the real data in that pixel
    space and the method's resolved options."""

    cfg: DistillConfig
    spec: MethodSpec
    real: RealData
    method_cfg: dict[str, Any]

    def resolved_config(self, out: Path | None = None) -> dict[str, Any]:
        """The configuration the set records (card ``distilkit.config``, ``distilkit_recipe.yaml``)."""
        return {**self.cfg.to_dict(), "out": str(out) if out is not None else None, "method_args": self.method_cfg}

    @property
    def fingerprint(self) -> str:
        """A hash of the resolved configuration (without the output folder): a checkpoint resumes only
        the run that wrote it."""
        resolved = {k: v for k, v in self.resolved_config().items() if k != "out"}
        return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_run(cfg: DistillConfig, accelerator, data: Any = None) -> PreparedRun:
    """Resolve ``cfg`` against its data: load the real data (``data``: a RealData or a datasets
    Dataset/DatasetDict to use instead of loading ``cfg.source``), pick the pixel space (``cfg``'s, else
    the method's for this kind of data, else normalized), resolve the method's options for the dataset
    families and check that the smallest class can feed the run."""
    cfg.check()
    spec = get_method(cfg.method)
    real = _real_data(cfg, cfg.pixel_space or "normalized", data, accelerator)
    families = dataset_families(real)
    wanted = spec.default_pixel_space(families)
    if cfg.pixel_space is None and wanted not in (None, real.pixel_space.kind):
        real = _real_data(cfg, wanted, data, accelerator)  # the method's pixel space for this data (e.g. MTT: ZCA)
    cfg = dataclasses.replace(cfg, pixel_space=real.pixel_space.kind)
    # The method's options are resolved here, once the data (and with it the dataset families) is known.
    method_cfg = spec.resolve(cfg.preset, cfg.ipc, cfg.method_args, families)
    check_fits(real, cfg.method, cfg.ipc, method_cfg)
    return PreparedRun(cfg, spec, real, method_cfg)


def _real_data(cfg: DistillConfig, pixel_space: str, data: Any, accelerator) -> RealData:
    """``cfg``'s real data in ``pixel_space``: ``data`` itself (a RealData, re-expressed in that space),
    ``data`` decoded (a Dataset/DatasetDict), or ``cfg.source`` loaded (the main process first: it fills
    the decode cache the others read)."""
    if isinstance(data, RealData):
        return in_pixel_space(data, pixel_space, cfg.zca_eps)
    with accelerator.main_process_first():
        return load_real(cfg.source, pixel_space, cfg.seed, cfg.zca_eps, dataset=data)


def run_method(run: PreparedRun, accelerator, checkpointer: Checkpointer | None = None, resume: bool = False,
               out: Path | None = None) -> DistilledSet:
    """Run the prepared method and return its :class:`DistilledSet` (``out``: the folder it will be saved
    to, recorded in its config). Writes nothing but ``checkpointer``'s checkpoints (None: off)."""
    cfg = run.cfg
    checkpointer = checkpointer or Checkpointer(None, run.fingerprint)
    ctx = RunContext(accelerator=accelerator, seed=cfg.seed, checkpointer=checkpointer, resume=resume)
    method_cfg = fetch_hub_inputs(run.method_cfg, accelerator=accelerator)  # hf:// inputs -> local folders
    started = time.perf_counter()
    output = run.spec.fn(run.real, cfg.ipc, method_cfg, ctx)
    wall = time.perf_counter() - started
    return DistilledSet(
        images=output.images, labels=output.labels, class_names=run.real.class_names,
        pixel_space=run.real.pixel_space, method=cfg.method, ipc=cfg.ipc, soft_labels=output.soft_labels,
        learned_lr=output.learned_lr, config=run.resolved_config(out), source=run.real.info,
        provenance={"distilkit_version": distilkit_version(), "seed": cfg.seed, "wall_time_s": round(wall, 2),
                    "hardware": describe_hardware(accelerator), "preset": cfg.preset,
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "final_loss": output.history["loss"][-1] if output.history.get("loss") else None},
        history=output.history,
    )
