"""``evaluate``: train fresh models on a distilled set and test them on the real test split."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import statistics
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from distilkit.data.dsa import DEFAULT_STRATEGY, DIGIT_STRATEGY, is_digit_dataset
from distilkit.data.real import RealData
from distilkit.data.sources import MEMORY_PREFIX, SourceConfig, load_real
from distilkit.distilled import DistilledSet
from distilkit.errors import DistilkitError
from distilkit.models import validate_model_name
from distilkit.runtime import distilkit_version, make_accelerator
from distilkit.seeding import derive_seed
from distilkit.train import LABEL_CHOICES, TrainConfig, train_and_test, train_preset


def source_config_of(dset: DistilledSet, override: str | None = None) -> SourceConfig:
    """The real source recorded in a set's card (or ``override``)."""
    recorded = (dset.config or {}).get("source") or {}
    known = {f.name for f in dataclasses.fields(SourceConfig)}
    cfg = SourceConfig(**{k: v for k, v in recorded.items() if k in known})
    if override is not None:
        cfg = dataclasses.replace(cfg, source=override)
    elif not recorded:
        raise DistilkitError("the set's card records no source; pass --source")
    elif str(cfg.source).startswith("local:"):  # a published card names a local source without its path
        raise DistilkitError(f"the set was distilled from a local dataset ({cfg.source}) that is not on the Hub; "
                             "pass --source with its folder")
    elif str(cfg.source).startswith(MEMORY_PREFIX):
        raise DistilkitError(f"the set was distilled from a dataset held in memory ({cfg.source}); pass --source "
                             "(in Python: source=, which also takes the Dataset, DatasetDict or RealData)")
    return cfg


def real_for_set(dset: DistilledSet, source: str | RealData | Any = None, accelerator=None,
                 fallback_seed: int = 0) -> RealData:
    """The real data ``dset`` was distilled from, for testing and auditing it: ``source`` (a source string, a
    :class:`RealData`, or a datasets Dataset/DatasetDict read with the options the set records), else the
    source its card records. Loaded in the raw pixel space (a RealData is used as given) with the set's seed,
    which fixes a carved test split (``fallback_seed`` when the set records none)."""
    if isinstance(source, RealData):
        return source
    seed = int((dset.provenance or {}).get("seed", fallback_seed))
    if source is None or isinstance(source, str):
        cfg, dataset = source_config_of(dset, source), None
    else:
        recorded = (dset.config or {}).get("source") or {"source": f"{MEMORY_PREFIX}dataset"}
        known = {f.name for f in dataclasses.fields(SourceConfig)}
        cfg, dataset = SourceConfig(**{k: v for k, v in recorded.items() if k in known}), source
    with accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext():
        return load_real(cfg, pixel_space="raw", seed=seed, dataset=dataset)


def evaluate_set(
    dset: DistilledSet,
    runs: int = 5,
    preset: str = "cpu",
    models: list[str] | None = None,
    seed: int = 0,
    source: str | RealData | Any = None,
    accelerator=None,
    protocol: TrainConfig | None = None,
    scores: bool = False,
    cache=None,
    labels: str | None = None,
    learned_lr: bool | None = None,
) -> list[dict]:
    """Mean ± std test accuracy over ``runs`` fresh models per architecture. Runs are split across
    processes and gathered; every process returns the same list. ``models`` may name ``cross`` (the
    cross-architecture pool). ``scores``: also the fair scores IOR, HLR, LRS, ARS
    (:mod:`distilkit.scores`), with the full-real models from ``cache`` (a RealModelCache).
    ``labels`` ("hard" | "soft") and ``learned_lr`` override the protocol's (None: the preset's;
    ``paper``: hard labels, lr 0.01). ``source``: see :func:`real_for_set`."""
    from accelerate.utils import gather_object

    from distilkit.models.classic import expand_models
    from distilkit.scores import fair_context, run_scores, summarise

    protocol = protocol or train_preset(preset)
    names = expand_models(models or [protocol.model], protocol.model)
    for model in names:
        validate_model_name(model, "evaluate")  # before any data is loaded
    if labels is not None and labels not in LABEL_CHOICES:
        raise DistilkitError(f"labels must be one of {', '.join(LABEL_CHOICES)}, got {labels!r}")
    protocol = dataclasses.replace(protocol, **{k: v for k, v in (("labels", labels), ("use_learned_lr", learned_lr))
                                                if v is not None})
    accelerator = accelerator or make_accelerator()
    real = real_for_set(dset, source, accelerator, fallback_seed=seed)
    if real.class_names != dset.class_names:
        raise DistilkitError("the source's classes do not match the set's classes")
    if tuple(real.image_shape) != tuple(dset.images.shape[1:]):
        raise DistilkitError(f"source images are {tuple(real.image_shape)}, the set's are "
                             f"{tuple(dset.images.shape[1:])}")
    test_images = dset.pixel_space.from_uint8(real.test_images)
    if protocol.dsa and protocol.dsa_strategy == DEFAULT_STRATEGY and any(
            is_digit_dataset(str(real.info.get(k) or "")) for k in ("id", "hub_id")):
        protocol = dataclasses.replace(protocol, dsa_strategy=DIGIT_STRATEGY)  # DSA README: no flip for digits
    lr = dset.lr_for(protocol.use_learned_lr)
    targets = dset.training_targets(protocol.labels)
    results = []
    if scores and cache is None:
        from distilkit.real_models import RealModelCache

        cache = RealModelCache()
    for model in names:
        ctx = None
        if scores:  # the main process trains (or loads) the full-real model first; the others load it
            with accelerator.main_process_first():
                ctx = fair_context(dset, real, model, protocol, cache, device=accelerator.device)
        mine = list(range(accelerator.process_index, runs, accelerator.num_processes))
        local = []
        for run in tqdm(mine, desc=f"evaluate {model}", disable=not accelerator.is_local_main_process):
            run_seed = derive_seed("evaluate", seed, model, run)  # the fair scores' runs pair with it
            acc = train_and_test(dset.images, targets, test_images, real.test_labels, dset.num_classes, protocol,
                                 seed=run_seed, model_name=model, lr=lr, device=accelerator.device)
            fair = None if ctx is None else run_scores(dset, ctx, protocol, model, run_seed, seed, run,
                                                       acc, lr, device=accelerator.device)
            local.append((run, acc, fair))
        gathered = sorted(gather_object(local) if accelerator.num_processes > 1 else local, key=lambda t: t[0])
        accs = [a for _, a, _ in gathered]
        results.append({
            "model": model, "preset": preset, "runs": runs,
            "mean": round(statistics.fmean(accs), 6), "std": round(statistics.pstdev(accs), 6),
            "accuracies": [round(a, 6) for a in accs], "seed": seed, "lr": lr or protocol.lr,
            "labels": dset.labels_used(protocol.labels), "learned_lr": lr is not None,
            "protocol": {**protocol.to_dict(), "model": model},
            "test_set": f"{real.info['id']} {real.info['test']['split']} ({real.test_images.shape[0]} images)",
            "date": dt.date.today().isoformat(), "distilkit_version": distilkit_version(),
        })
        if ctx is not None:
            results[-1]["scores"] = summarise([f for _, _, f in gathered], ctx, protocol)
    return results


def _result_key(r: dict) -> tuple:
    """(model, preset, labels option, learned-lr option); results from before these options count as
    the defaults they were measured with (soft labels when present, the learned lr when present)."""
    protocol = r.get("protocol") or {}
    return r.get("model"), r.get("preset"), protocol.get("labels", "soft"), protocol.get("use_learned_lr", True)


def merge_results(existing: list[dict], new: list[dict]) -> list[dict]:
    """Replace results with the same (model, preset, labels, learned lr), keep the others."""
    keys = {_result_key(r) for r in new}
    return [r for r in existing if _result_key(r) not in keys] + new


def evaluate_folder(folder: str | Path, **kwargs) -> list[dict]:
    """Evaluate the set in ``folder`` and write the results into its card."""
    from distilkit.card import read_card, update_card_evaluation
    from distilkit.outputs import FolderLock, check_output_folder, lock_path, lock_timeout

    accelerator = kwargs.pop("accelerator", None) or make_accelerator()
    dset = DistilledSet.load(folder)
    if accelerator.is_main_process:  # the card is rewritten at the end: refuse a read-only set before training
        check_output_folder(folder, "SET")
        check_output_folder(lock_path(folder).parent, "the folder holding SET")
    wait = lock_timeout()
    results = evaluate_set(dset, accelerator=accelerator, **kwargs)
    if accelerator.is_main_process:
        with FolderLock(folder, "evaluate", wait=wait):  # merge with the card as it is now (an audit may have run)
            recorded = (read_card(Path(folder)).data.get("distilkit") or {}).get("evaluation") or []
            update_card_evaluation(Path(folder), merge_results(list(recorded), results))
    accelerator.wait_for_everyone()
    return results
