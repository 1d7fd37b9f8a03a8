"""The in-memory Python API: distill, evaluate, audit, publish and load sets without folders.

    from distilkit import distill, audit, load_set
    dset = distill("embedded", method="dm", ipc=10, preset="cpu")     # a DistilledSet; nothing written
    dset.save("out/"); dset.evaluate(runs=5); dset.push_to_hub("user/name")
    report = audit(dset, only=["recognition"], preset="cpu")            # an AuditReport
    dset = load_set("user/name")                                         # a folder, hf:// id or repo id

These are the library under the ``distilkit`` command (which adds folders, locks and checkpoints
around the same cores: :mod:`distilkit.pipeline`, :mod:`distilkit.evaluate`,
:mod:`distilkit.audit._report`). No call changes process-wide state (environment variables, the
allocator, the Hub client); the command's entry point does that (:func:`distilkit.runtime.configure_process`).
Each call takes an ``accelerator`` (default: a new one, on the GPU if there is one).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from distilkit.audit._report import AuditReport
    from distilkit.data.real import RealData
    from distilkit.distilled import DistilledSet
    from distilkit.hub.publish import Published
    from distilkit.real_models import RealModelCache

    Source = str | Dataset | DatasetDict | RealData
    SetLike = DistilledSet | str | os.PathLike


def distill(
    source: Source | os.PathLike = "embedded",
    *,
    method: str = "dm",
    ipc: int = 10,
    preset: str = "cpu",
    seed: int = 0,
    pixel_space: str | None = None,
    zca_eps: float = 0.1,
    method_args: Mapping[str, Any] | None = None,
    source_options: Mapping[str, Any] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    accelerator=None,
) -> DistilledSet:
    """Distill ``source`` into a :class:`~distilkit.distilled.DistilledSet` held in memory.

    ``source``: ``"embedded"``, a local folder or parquet file, a Hub dataset id (as ``--source``), a
    ``datasets.Dataset`` (its train split; a test split is carved from it) or ``DatasetDict``, or a
    :class:`~distilkit.data.real.RealData` (its images and labels; the pixel space follows
    ``pixel_space`` as for any source). ``source_options``: the source's reading options (``subset``,
    ``split``, ``test_split``, ``revision``, ``image_column``, ``label_column``, ``image_size``,
    ``holdout_fraction``, ``drop_empty_classes``); ``method_args``: the method's options (see
    ``distilkit methods NAME``), checked like ``--arg``. ``pixel_space`` None: the method's for this
    kind of data, else ``normalized``.

    Nothing is written (beyond distilkit's caches): the set is saved by ``dset.save(folder)``.
    ``checkpoint_dir`` turns on checkpoints there, and ``resume`` continues from them.
    """
    from distilkit.checkpoint import Checkpointer
    from distilkit.config import resolve_distill_config
    from distilkit.data.real import RealData
    from distilkit.data.sources import MEMORY_PREFIX, SourceConfig
    from distilkit.errors import DistilkitError
    from distilkit.pipeline import prepare_run, run_method
    from distilkit.runtime import make_accelerator

    options = dict(source_options or {})
    known = {f.name for f in dataclasses.fields(SourceConfig)} - {"source"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise DistilkitError(f"unknown source option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    data = None if isinstance(source, str) else source
    if isinstance(source, RealData):
        if options:
            raise DistilkitError("source_options apply to a source that is read, not to a RealData")
        name, options = f"{MEMORY_PREFIX}{source.info.get('id') or 'real-data'}", _real_source_options(source)
    elif data is not None:
        name = f"{MEMORY_PREFIX}{_dataset_name(source)}"
    else:
        name = source
    cfg = resolve_distill_config(None, source=name, method=method, ipc=ipc, preset=preset, seed=seed,
                                 pixel_space=pixel_space, zca_eps=zca_eps, method_args=dict(method_args or {}),
                                 **options)
    accelerator = accelerator or make_accelerator()
    run = prepare_run(cfg, accelerator, data=data)
    checkpointer = None
    if checkpoint_dir is not None:
        checkpointer = Checkpointer(Path(checkpoint_dir), run.fingerprint,
                                    every=int(run.method_cfg.get("checkpoint_every", 0)))
    return run_method(run, accelerator, checkpointer, resume=resume)


def _dataset_name(dataset: Dataset | DatasetDict) -> str:
    """A name for a Dataset or DatasetDict handed over in memory (recorded as the set's source)."""
    first = next(iter(dataset.values()), None) if isinstance(dataset, Mapping) else dataset
    info = getattr(first, "info", None)
    return getattr(info, "dataset_name", None) or getattr(info, "builder_name", None) or "dataset"


def _real_source_options(real: RealData) -> dict[str, Any]:
    """The reading options a RealData records (split, subset, revision, columns), for the set's config."""
    keep = ("subset", "split", "revision", "image_column", "label_column")
    return {k: real.info[k] for k in keep if real.info.get(k) is not None}


def evaluate(
    dset: SetLike,
    *,
    runs: int = 5,
    preset: str = "cpu",
    models: Sequence[str] | None = None,
    seed: int = 0,
    source: Source | None = None,
    labels: str | None = None,
    learned_lr: bool | None = None,
    scores: bool = False,
    accelerator=None,
) -> list[dict]:
    """Train ``runs`` fresh models per architecture on the set and test them on the real test split (as
    ``distilkit evaluate``); returns one result per model (``mean``, ``std``, ``accuracies``, protocol,
    ...). On a :class:`~distilkit.distilled.DistilledSet` the results are also recorded in its
    ``evaluation`` (the card's, once saved); a folder or Hub id is read, never written. ``source``: the
    real data, if not the one the set records (a source string, a Dataset/DatasetDict or a RealData)."""
    from distilkit.distilled import DistilledSet
    from distilkit.evaluate import evaluate_set, merge_results

    target = dset if isinstance(dset, DistilledSet) else load_set(dset)
    results = evaluate_set(target, runs=runs, preset=preset, models=list(models) if models else None, seed=seed,
                           source=source, accelerator=accelerator, scores=scores,
                           labels=labels, learned_lr=learned_lr)
    target.evaluation = merge_results(list(target.evaluation), results)
    return results


def audit(
    dset: SetLike,
    *,
    only: Sequence[str] | None = None,
    preset: str = "cpu",
    source: Source | None = None,
    seed: int = 0,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    labels: str | None = None,
    learned_lr: bool | None = None,
    cache: RealModelCache | None = None,
    accelerator=None,
) -> AuditReport:
    """Run the study's audits (``only``: their names, default all; ``distilkit audits`` lists them) on a
    set, a folder or a Hub id, and return an :class:`~distilkit.audit._report.AuditReport` (``.summary``,
    ``.verdicts``, ``.figures``, ``.to_markdown()``, ``.save(folder)``); nothing is written but the cache
    of real-data models. ``source``: the real data, if not the one the set records. ``overrides`` maps
    an audit name to options (as ``--arg AUDIT.KEY=VALUE``); ``labels`` / ``learned_lr`` how every audit
    trains on the set (default: the study's hard labels and lr 0.01). Every process gets the report."""
    from distilkit.audit._report import audit_real, plan_audits, run_planned
    from distilkit.distilled import DistilledSet
    from distilkit.runtime import make_accelerator

    plan = plan_audits(list(only) if only else None, preset, seed,
                       {k: dict(v) for k, v in (overrides or {}).items()}, labels, learned_lr)
    target = dset if isinstance(dset, DistilledSet) else load_set(dset)
    accelerator = accelerator or make_accelerator()
    report = run_planned(plan, target, audit_real(target, source, accelerator), accelerator, cache)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        report = broadcast_object_list([report])[0]
    return report


def publish(dset: SetLike, repo_id: str, *, config_name: str = "default", private: bool = False,
            token: str | None = None, revision: str | None = None) -> Published:
    """Push a set (in memory, or a folder) to the Hub dataset repo ``repo_id`` as ``distilkit publish``
    does: the data, the merged card and the artifacts. An in-memory set is first saved to a temporary
    folder named after the repo (removed afterwards). The token: ``token``, ``HF_TOKEN`` or the login."""
    from distilkit.distilled import DistilledSet
    from distilkit.hub.publish import check_repo_id, publish_set

    if not isinstance(dset, DistilledSet):
        return publish_set(dset, repo_id, config_name=config_name, private=private, token=token, revision=revision)
    check_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="distilkit-publish-") as tmp:
        folder = dset.save(Path(tmp) / repo_id.split("/")[-1], card_ref=repo_id)
        return publish_set(folder, repo_id, config_name=config_name, private=private, token=token,
                           revision=revision)


def load_set(ref: str | os.PathLike, *, token: str | None = None) -> DistilledSet:
    """A set in memory from a folder, an ``hf://datasets/<id>[@<revision>][/<config>]`` URI or a bare
    ``<namespace>/<name>`` repo id (when no folder of that name exists); a repo is downloaded once per
    commit into distilkit's cache. The token: ``token``, ``HF_TOKEN`` or the login."""
    from distilkit.distilled import DistilledSet
    from distilkit.hub.repo import open_set

    with open_set(os.fspath(ref), token) as opened:
        return DistilledSet.load(opened.folder)
