"""DistilledSet: the in-memory distilled set, and its Hub-layout folder.

The set format stands alone: this module and its card (:mod:`distilkit.card`) import data and
pixel-space code only, never methods, audits or the Hub, so a set made by any method, or imported
from another toolkit, saves and loads.

Folder layout (loads with plain ``datasets.load_dataset(folder)``, no distilkit import):

    README.md                           dataset card: YAML (standard keys + ``distilkit:``) and body
    data/train-00000-of-00001.parquet   image: Array3D float32 [C, H, W], label: ClassLabel,
                                        soft_label (optional): float32 [K]
    preview.png                         a grid of the images (display only, never the data)
    distilkit_recipe.yaml               the resolved configuration that produced the set
    distilkit_history.json              the method's loss curve (selection: the chosen indices)
    zca.safetensors                     the ZCA matrix, for sets in the ``zca`` pixel space

``save`` writes everything into a temporary sibling folder and renames it into place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from distilkit import jsonio
from distilkit.card import read_card, render_card
from distilkit.data.pixel_space import ZCA_FILE, PixelSpace
from distilkit.data.zca import ZCA
from distilkit.errors import ConfigError, DistilkitError

DATA_FILE = "data/train-00000-of-00001.parquet"
RECIPE_FILE = "distilkit_recipe.yaml"
HISTORY_FILE = "distilkit_history.json"
PREVIEW_FILE = "preview.png"


@dataclass
class DistilledSet:
    """Distilled images (float32 [N, C, H, W], in ``pixel_space``) with labels and provenance."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    pixel_space: PixelSpace
    method: str
    ipc: int
    soft_labels: torch.Tensor | None = None
    learned_lr: float | None = None
    config: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    evaluation: list[dict] = field(default_factory=list)
    card_extra: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = self.images.detach().float().contiguous()
        self.labels = self.labels.long()
        if self.images.ndim != 4 or self.images.shape[0] != self.labels.shape[0]:
            raise ConfigError(f"images must be [N, C, H, W] with one label per image, got images "
                              f"{list(self.images.shape)} and {self.labels.shape[0]} labels")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def training_targets(self, labels: str = "soft") -> torch.Tensor:
        """What to train on: ``labels="soft"``: the soft labels when the set has them, else the hard
        labels; ``"hard"``: always the hard labels (the study's protocol)."""
        if labels not in ("hard", "soft"):
            raise ConfigError(f"labels must be 'hard' or 'soft', got {labels!r}")
        return self.soft_labels if labels == "soft" and self.soft_labels is not None else self.labels

    def labels_used(self, labels: str = "soft") -> str:
        """Which labels :meth:`training_targets` gives for ``labels``: "soft" only if the set has them."""
        return "soft" if labels == "soft" and self.soft_labels is not None else "hard"

    def lr_for(self, learned_lr: bool) -> float | None:
        """The set's learned learning rate if ``learned_lr`` and it has one, else None (the protocol's)."""
        return self.learned_lr if learned_lr and self.learned_lr else None

    def card_metadata(self) -> dict:
        """The machine-readable ``distilkit:`` entry of the card (non-finite numbers written as null)."""
        c, h, w = self.images.shape[1:]
        meta = {
            "version": self.provenance.get("distilkit_version"),
            "method": self.method,
            "ipc": self.ipc,
            "num_images": int(self.images.shape[0]),
            "num_classes": self.num_classes,
            "image": {"shape": [int(c), int(h), int(w)], "dtype": "float32", "column": "image"},
            "pixel_space": self.pixel_space.to_card(),
            "labels": {"type": "soft" if self.soft_labels is not None else "hard",
                       "column": "soft_label" if self.soft_labels is not None else "label"},
            "learned_lr": self.learned_lr,
            "source": self.source,
            "config": self.config,
            "provenance": self.provenance,
            "evaluation": self.evaluation,
        }
        meta.update(self.card_extra)
        return jsonio.finite(meta)  # the Hub reads the card's YAML as JSON: an undefined number is null

    # ----------------------------------------------------------------------------------- I/O
    def to_dataset(self):
        from datasets import Array3D, ClassLabel, Dataset, Features, List, Value

        c, h, w = (int(s) for s in self.images.shape[1:])
        columns = {"image": self.images.numpy(), "label": self.labels.numpy()}
        features = {"image": Array3D(shape=(c, h, w), dtype="float32"), "label": ClassLabel(names=self.class_names)}
        if self.soft_labels is not None:
            columns["soft_label"] = self.soft_labels.float().numpy()
            features["soft_label"] = List(Value("float32"), length=self.num_classes)
        return Dataset.from_dict(columns, features=Features(features))

    def save(self, folder: str | Path, overwrite: bool = False, card_ref: str | None = None) -> Path:
        """Write the Hub-layout folder atomically (temp sibling + rename)."""
        from distilkit.outputs import check_replaceable
        from distilkit.plots import save_preview

        folder = Path(folder)
        check_finite(self.images, self.soft_labels, self.learned_lr, "the distilled set")
        if overwrite:
            check_replaceable(folder)  # only a distilled set is ever replaced
        elif folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise DistilkitError(f"output folder {folder} exists and is not empty; pass --overwrite or choose --out")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the set is an ordinary folder
        try:
            (tmp / "data").mkdir()
            self.to_dataset().to_parquet(str(tmp / DATA_FILE))
            if self.pixel_space.kind == "zca":
                self.pixel_space.zca.save(tmp / ZCA_FILE)
            (tmp / RECIPE_FILE).write_text(yaml.safe_dump(self.config, sort_keys=False))
            if self.history:
                (tmp / HISTORY_FILE).write_text(jsonio.dumps(self.history))
            save_preview(self, tmp / PREVIEW_FILE)
            (tmp / "README.md").write_text(render_card(self, card_ref or str(folder)), encoding="utf-8")
            _swap_in(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> DistilledSet:
        """Read a folder written by :meth:`save` (bit-exact round trip)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise DistilkitError(f"{folder} is not a folder")
        card = read_card(folder)
        meta = card.data.get("distilkit")
        if not isinstance(meta, dict):
            raise DistilkitError(f"{folder} is not a distilkit set (its README.md has no 'distilkit' entry)")
        try:
            images, labels, soft, names = _read_parquet(folder / DATA_FILE)
            space_meta = meta["pixel_space"]
            zca = None
            if space_meta["space"] == "zca":
                zca_file = folder / ZCA_FILE
                if not zca_file.is_file():
                    raise DistilkitError(f"{folder} is a zca-space set but {ZCA_FILE} is missing")
                zca = ZCA.load(zca_file, eps=float(space_meta["zca"]["eps"]))
            space = PixelSpace(space_meta["space"], list(space_meta["mean"]), list(space_meta["std"]), zca)
            shape = list(meta["image"]["shape"])
        except DistilkitError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise DistilkitError(f"{folder}: the card's distilkit entry is incomplete or corrupt ({err})") from err
        if list(images.shape[1:]) != shape:
            raise DistilkitError(f"{folder}: images have shape {list(images.shape[1:])}, card says {shape}")
        check_finite(images, soft, meta.get("learned_lr"), str(folder))
        known = {"version", "method", "ipc", "num_images", "num_classes", "image", "pixel_space", "labels",
                 "learned_lr", "source", "config", "provenance", "evaluation"}
        history_file = folder / HISTORY_FILE
        history = json.loads(history_file.read_text()) if history_file.is_file() else {}
        return cls(images=images, labels=labels, class_names=names, pixel_space=space, method=meta["method"],
                   ipc=int(meta["ipc"]), soft_labels=soft, learned_lr=meta.get("learned_lr"),
                   config=meta.get("config") or {}, source=meta.get("source") or {},
                   provenance=meta.get("provenance") or {}, evaluation=list(meta.get("evaluation") or []),
                   card_extra={k: v for k, v in meta.items() if k not in known}, history=history)

    def evaluate(self, runs: int = 5, preset: str = "cpu", **options) -> list[dict]:
        """Train ``runs`` fresh models on this set and test them on the real test split; the results are
        returned and recorded in :attr:`evaluation` (the card's, once saved). ``options``: those of
        :func:`distilkit.api.evaluate` (``models``, ``seed``, ``source``, ``labels``, ...)."""
        from distilkit.api import evaluate

        return evaluate(self, runs=runs, preset=preset, **options)

    def push_to_hub(self, repo_id: str, **options):
        """Publish this set to the Hub dataset repo ``repo_id`` (data, card, artifacts) and return what was
        pushed. ``options``: those of :func:`distilkit.api.publish` (``config_name``, ``private``, ``token``,
        ``revision``)."""
        from distilkit.api import publish

        return publish(self, repo_id, **options)


def check_finite(images: torch.Tensor, soft_labels: torch.Tensor | None, learned_lr, where: str) -> None:
    """Refuse NaN or infinite pixels, soft labels or learned lr (a diverged run or a damaged file): such a
    set trains to chance and its numbers would poison every card and report written from it."""
    bad = int((~torch.isfinite(images)).sum())
    if bad:
        raise DistilkitError(f"{where} has {bad} NaN or infinite pixel values (of {images.numel()}); "
                             "it cannot be trained on")
    if soft_labels is not None and not bool(torch.isfinite(soft_labels).all()):
        bad = int((~torch.isfinite(soft_labels)).sum())
        raise DistilkitError(f"{where} has {bad} NaN or infinite soft-label values")
    if learned_lr is not None:
        try:
            ok = math.isfinite(float(learned_lr))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DistilkitError(f"{where} has a learned lr that is not a finite number ({learned_lr!r})")


def _read_parquet(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[str]]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DistilkitError(f"data file {path} is missing")
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for damaged files
        raise DistilkitError(f"cannot read {path}: {str(err).splitlines()[0]}") from err
    for column in ("image", "label"):
        if column not in table.column_names:
            raise DistilkitError(f"{path} has no {column!r} column")
    features = json.loads((table.schema.metadata or {}).get(b"huggingface", b"{}")).get("info", {}).get(
        "features", {})
    names = features.get("label", {}).get("names")
    column = table.column("image").combine_chunks()
    shape = features.get("image", {}).get("shape")
    flat = column
    while _is_list(flat):
        flat = flat.flatten()
    values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32)
    n = table.num_rows
    images = torch.from_numpy(values.copy()).reshape(n, *(shape or [-1]))
    labels = torch.from_numpy(np.asarray(table.column("label").to_numpy(), dtype=np.int64).copy())
    soft = None
    if "soft_label" in table.column_names:
        soft_flat = table.column("soft_label").combine_chunks().flatten()
        soft = torch.from_numpy(np.asarray(soft_flat.to_numpy(), dtype=np.float32).copy()).reshape(n, -1)
    if names is None:
        names = [str(i) for i in range(int(labels.max()) + 1)]
    return images, labels, soft, list(names)


def _is_list(array) -> bool:
    import pyarrow as pa

    return pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type) or \
        pa.types.is_large_list(array.type)


def _swap_in(tmp: Path, folder: Path) -> None:
    """Replace ``folder`` by ``tmp`` so that a crash never leaves a half-written folder in place."""
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(folder)
