"""Load a real image-classification dataset from the Hub, a local folder or the embedded default.

Whatever the origin, the result is a :class:`RealData`: images decoded once into uint8 tensors
(cached as safetensors, keyed by the datasets fingerprint), labels 0..K-1, class names, per-channel
normalisation statistics of the train split, and a test split (the source's own, or a seeded,
class-stratified hold-out carved from train, which is recorded).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from distilkit.cache import cache_dir
from distilkit.data.idx import find_idx_file, idx_class_names, is_idx_folder, read_idx
from distilkit.data.pixel_space import PixelSpace
from distilkit.data.real import RealData
from distilkit.data.zca import ZCA
from distilkit.errors import ConfigError, DistilkitError, SourceError
from distilkit.outputs import write_atomic

EMBEDDED = "embedded"
EMBEDDED_DIR = Path(__file__).parent / "embedded" / "fashion_mnist"
EMBEDDED_INFO = {"id": "embedded:fashion_mnist", "hub_id": "zalando-datasets/fashion_mnist",
                 "license": "mit", "pretty_name": "Fashion-MNIST (distilkit embedded subset)"}
MEMORY_PREFIX = "memory:"  # names a source handed over in memory (a Dataset, DatasetDict or RealData)
IMAGE_COLUMN_NAMES = ("image", "img", "images", "pixel_values", "picture")
MAX_IMAGE_SIZE = 4096
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "class", "target", "y")


@dataclass
class SourceConfig:
    """Where the real data comes from and how to read it."""

    source: str = EMBEDDED
    subset: str | None = None
    split: str = "train"
    test_split: str | None = None
    revision: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    image_size: int | None = None
    holdout_fraction: float = 0.1
    drop_empty_classes: bool = False  # drop ClassLabel classes without train images (labels are remapped)

    def check(self) -> SourceConfig:
        """Range checks that need no data: fail before anything is loaded."""
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError("the source is empty; give 'embedded', a folder, a parquet file or a Hub id")
        if self.image_size is not None and not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"--image-size must be between 1 and {MAX_IMAGE_SIZE}, got {self.image_size}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(f"holdout_fraction must be between 0 and 1 (exclusive), got {self.holdout_fraction}")
        if self.image_column is not None and self.image_column == self.label_column:
            raise ConfigError(f"--image-column and --label-column are both {self.image_column!r}")
        return self


def _read_card_yaml(folder: Path) -> dict:
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    from huggingface_hub import DatasetCard

    try:
        return DatasetCard(readme.read_text(encoding="utf-8"), ignore_metadata_errors=True).data.to_dict()
    except Exception:  # a source's card is informational; a broken one must not block loading
        return {}


def _load_dataset_dict(cfg: SourceConfig):
    import datasets

    try:
        if cfg.source == EMBEDDED:
            return datasets.load_dataset(str(EMBEDDED_DIR)), dict(EMBEDDED_INFO)
        path = Path(cfg.source).expanduser()
        if path.is_file() and path.suffix == ".parquet":
            return datasets.load_dataset("parquet", data_files={"train": str(path)}), {
                "id": str(path), "license": None}
        if path.is_dir():
            card = _read_card_yaml(path)
            if "distilkit" in card:
                raise SourceError(f"{path} is a distilled set, not a real dataset; give its source instead")
            info = {"id": str(path), "license": card.get("license"), "pretty_name": card.get("pretty_name")}
            return datasets.load_dataset(str(path), name=cfg.subset), info
        if cfg.source.startswith((".", "/", "~")) or os.sep in cfg.source and not _looks_like_hub_id(cfg.source):
            raise SourceError(f"source {cfg.source!r} does not exist")
        ds = datasets.load_dataset(cfg.source, name=cfg.subset, revision=cfg.revision)
        return ds, {"id": cfg.source, "hub_id": cfg.source, "license": _hub_license(cfg.source)}
    except DistilkitError:
        raise
    except FileNotFoundError as err:
        raise SourceError(f"source {cfg.source!r} not found: {_first_line(err)}") from err
    except Exception as err:  # datasets raises many types (DatasetNotFoundError, ValueError, ...)
        raise SourceError(f"cannot load source {cfg.source!r}: {_first_line(err)}") from err


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _hub_license(repo_id: str) -> str | None:
    try:
        from huggingface_hub import DatasetCard

        return DatasetCard.load(repo_id, repo_type="dataset").data.get("license")
    except Exception:  # licence lookup is best effort; the card says "unknown" otherwise
        return None


def detect_columns(features, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    """Pick the image and label columns from a datasets ``Features`` mapping."""
    from datasets import Array2D, Array3D, ClassLabel, Image, Value

    names = list(features)
    for given, kind in ((image_column, "image"), (label_column, "label")):
        if given is not None and given not in features:
            raise SourceError(f"{kind} column {given!r} not in the dataset (columns: {', '.join(names)})")
    if image_column is None:
        typed = [n for n in names if isinstance(features[n], (Image, Array2D, Array3D))]
        named = [n for n in names if n.lower() in IMAGE_COLUMN_NAMES]
        image_column = (typed or named or [None])[0]
    if label_column is None:
        typed = [n for n in names if isinstance(features[n], ClassLabel)]
        named = [n for n in names if n.lower() in LABEL_COLUMN_NAMES and isinstance(features[n], Value)
                 and features[n].dtype.startswith(("int", "uint", "string"))]
        label_column = (typed or named or [None])[0]
    if image_column is None or label_column is None:
        missing = "image" if image_column is None else "label"
        raise SourceError(f"the dataset has no {missing} column (columns: {', '.join(names)}); "
                          "name it with --image-column/--label-column")
    holds_images = not isinstance(features[image_column], (ClassLabel, Value))
    label_feature = features[label_column]
    holds_labels = isinstance(label_feature, ClassLabel) or (
        isinstance(label_feature, Value) and label_feature.dtype.startswith(("int", "uint", "string")))
    if not holds_images and not holds_labels and not isinstance(features[label_column], Value):
        raise SourceError(f"image column {image_column!r} holds labels and label column {label_column!r} holds "
                          "images: --image-column and --label-column are swapped")
    if not holds_images:
        raise SourceError(f"image column {image_column!r} holds {_feature_kind(features[image_column])}, not "
                          "images; name the image column with --image-column")
    if not holds_labels:
        raise SourceError(f"label column {label_column!r} holds {_feature_kind(features[label_column])}, not "
                          "class labels (integers, strings or a ClassLabel); name it with --label-column")
    return image_column, label_column


def _feature_kind(feature) -> str:
    from datasets import ClassLabel, Image, Value

    if isinstance(feature, ClassLabel):
        return "class labels"
    if isinstance(feature, Image):
        return "images"
    if isinstance(feature, Value):
        return f"{feature.dtype} values"
    return type(feature).__name__


def _decode_images(ds, column: str, mode: str | None, size: int | None) -> tuple[torch.Tensor, str, int]:
    """Decode a column once into uint8 [N, C, H, W]; PIL images are converted to one mode and size."""
    from datasets import Image

    feature = ds.features[column]
    if not isinstance(feature, Image):
        arrays = np.asarray(ds.with_format("numpy")[column])
        if arrays.dtype.kind not in "uif":
            raise SourceError(f"image column {column!r} holds {arrays.dtype} arrays, not pixel values")
        if arrays.dtype.kind == "f" and not np.isfinite(arrays).all():
            bad = int((~np.isfinite(arrays)).sum())
            raise SourceError(f"image column {column!r} has {bad} NaN or infinite pixel values of {arrays.size}")
        if arrays.dtype != np.uint8:
            if arrays.max() > 1.0 + 1e-6:
                arrays = np.clip(arrays, 0, 255).round().astype(np.uint8)
            else:
                arrays = np.clip(arrays * 255.0, 0, 255).round().astype(np.uint8)
        if arrays.ndim == 3:
            arrays = arrays[:, None]
        elif arrays.ndim == 4 and arrays.shape[-1] in (1, 3) and arrays.shape[1] not in (1, 3):
            arrays = arrays.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(arrays)), "array", arrays.shape[-1]
    from tqdm.auto import tqdm

    out = None
    for start in tqdm(range(0, len(ds), 2048), desc=f"decoding {column}", leave=False):
        images = ds[start : start + 2048][column]
        if mode is None:
            mode = "L" if images[0].mode in ("L", "1", "I", "I;16", "F", "LA") else "RGB"
        if size is None:
            size = images[0].size[0] if images[0].size[0] == images[0].size[1] else min(images[0].size)
        arrays = []
        for image in images:
            image = image.convert(mode)
            if image.size != (size, size):
                image = image.resize((size, size))
            arrays.append(np.asarray(image, dtype=np.uint8))
        block = np.stack(arrays)
        block = block[:, None] if block.ndim == 3 else block.transpose(0, 3, 1, 2)
        if out is None:
            out = np.empty((len(ds), *block.shape[1:]), dtype=np.uint8)
        out[start : start + len(block)] = block
    return torch.from_numpy(out), mode, size


def _labels(ds, column: str) -> tuple[torch.Tensor, list[str] | None]:
    from datasets import ClassLabel

    feature = ds.features[column]
    values = ds[column]
    if isinstance(feature, ClassLabel):
        return torch.tensor(list(values), dtype=torch.long), list(feature.names)
    return None, sorted({str(v) for v in values}, key=lambda s: (len(s), s)) if values else []


def _carve_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    keys = torch.rand(len(labels), generator=generator)
    order = torch.argsort(labels * 2.0 + keys)  # class-major, random within class
    counts = torch.bincount(labels)
    rank = torch.arange(len(labels)) - (torch.cumsum(counts, 0) - counts)[labels[order]]
    held = torch.zeros(len(labels), dtype=torch.bool)
    held[order[rank < (counts[labels[order]] * fraction).round().long().clamp(min=1)]] = True
    return (~held).nonzero().squeeze(1), held.nonzero().squeeze(1)


def _idx_source(cfg: SourceConfig, folder: Path) -> tuple[dict, list[str], dict, str | None]:
    tensors = {}
    for split, name in ((cfg.split, "train"), (cfg.test_split or "test", "test")):
        images_file, labels_file = find_idx_file(folder, split, "images"), find_idx_file(folder, split, "labels")
        if images_file is None or labels_file is None:
            if name == "train" or cfg.test_split is not None:
                raise SourceError(f"IDX folder {folder} has no {split!r} images/labels files")
            continue
        tensors[f"{name}_images"] = torch.from_numpy(read_idx(images_file).copy()).unsqueeze(1)
        tensors[f"{name}_labels"] = torch.from_numpy(read_idx(labels_file).astype(np.int64))
    names = idx_class_names(folder, int(tensors["train_labels"].max()) + 1)
    info = {"id": str(folder), "license": None}
    if names[0] == "T-shirt/top":
        info.update(hub_id="zalando-datasets/fashion_mnist", license="mit", pretty_name="Fashion-MNIST")
    return tensors, names, info, "test" if "test_images" in tensors else None


def _in_memory_dict(dataset, cfg: SourceConfig):
    """A datasets Dataset (as split ``cfg.split``) or DatasetDict held in memory, and its source info."""
    import datasets

    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({cfg.split: dataset})
    if not isinstance(dataset, datasets.DatasetDict) or not dataset:
        raise DistilkitError(f"expected a datasets Dataset or DatasetDict, got {type(dataset).__name__}")
    first = next(iter(dataset.values())).info
    return dataset, {"id": cfg.source, "license": first.license or None,
                     "pretty_name": first.dataset_name or None}


def _hf_source(cfg: SourceConfig, dataset=None) -> tuple[dict, list[str], dict, str | None]:
    """Decode ``cfg``'s source (or the in-memory ``dataset``); a loaded source's decoded tensors are
    cached by the datasets fingerprint, an in-memory dataset's are not (it may never be seen again)."""
    dsd, info = _load_dataset_dict(cfg) if dataset is None else _in_memory_dict(dataset, cfg)
    if cfg.split not in dsd:
        raise SourceError(f"split {cfg.split!r} not in source {cfg.source!r} (splits: {', '.join(dsd)})")
    train = dsd[cfg.split]
    image_col, label_col = detect_columns(train.features, cfg.image_column, cfg.label_column)
    test_name = cfg.test_split or next((s for s in ("test", "validation", "valid", "val") if s in dsd), None)
    if cfg.test_split is not None and cfg.test_split not in dsd:
        raise SourceError(f"test split {cfg.test_split!r} not in source (splits: {', '.join(dsd)})")
    info.update(image_column=image_col, label_column=label_col)

    key = hashlib.sha256(json.dumps([train._fingerprint, dsd[test_name]._fingerprint if test_name else None,
                                     image_col, label_col, cfg.image_size], sort_keys=True).encode())
    cache_file = cache_dir() / "decoded" / f"{key.hexdigest()[:24]}.safetensors" if dataset is None else None
    if cache_file is not None and cache_file.is_file():
        tensors = load_file(str(cache_file))
        meta = json.loads(tensors.pop("_meta").numpy().tobytes().decode())
        return tensors, meta["class_names"], info, test_name
    train_images, mode, size = _decode_images(train, image_col, None, cfg.image_size)
    train_labels, names = _labels(train, label_col)
    tensors = {"train_images": train_images}
    if test_name is not None:
        tensors["test_images"], _, _ = _decode_images(dsd[test_name], image_col, mode if mode != "array"
                                                      else None, size if mode != "array" else None)
        test_labels, _ = _labels(dsd[test_name], label_col)
    if train_labels is None:  # plain values: map sorted distinct values to 0..K-1
        lookup = {name: i for i, name in enumerate(names)}
        train_labels = torch.tensor([lookup[str(v)] for v in train[label_col]])
        if test_name is not None:
            unknown = {str(v) for v in dsd[test_name][label_col]} - set(lookup)
            if unknown:
                raise SourceError(f"test split has labels not in train: {sorted(unknown)[:5]}")
            test_labels = torch.tensor([lookup[str(v)] for v in dsd[test_name][label_col]])
    tensors["train_labels"] = train_labels
    if test_name is not None:
        tensors["test_labels"] = test_labels
    if cache_file is None:
        return tensors, names, info, test_name
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    blob = torch.frombuffer(bytearray(json.dumps({"class_names": names}).encode()), dtype=torch.uint8)
    write_atomic(cache_file, lambda tmp: save_file({**{k: v.contiguous() for k, v in tensors.items()}, "_meta": blob},
                                                   str(tmp)))
    return tensors, names, info, test_name


def probe_source(cfg: SourceConfig) -> None:
    """Check that ``cfg``'s source opens and has an image and a label column, without decoding any image
    (for commands that hand the source to other processes, e.g. ``bench``: they fail before any work)."""
    cfg.check()
    if cfg.source == EMBEDDED:
        return
    folder = Path(cfg.source).expanduser()
    if is_idx_folder(folder):
        if find_idx_file(folder, cfg.split, "images") is None or find_idx_file(folder, cfg.split, "labels") is None:
            raise SourceError(f"IDX folder {folder} has no {cfg.split!r} images/labels files")
        return
    dsd, _ = _load_dataset_dict(cfg)
    if cfg.split not in dsd:
        raise SourceError(f"split {cfg.split!r} not in source {cfg.source!r} (splits: {', '.join(dsd)})")
    detect_columns(dsd[cfg.split].features, cfg.image_column, cfg.label_column)


def _check_classes(cfg: SourceConfig, train_labels: torch.Tensor, test_images: torch.Tensor | None,
                   test_labels: torch.Tensor | None, names: list[str]):
    """Refuse a source with fewer than two classes or with empty classes (or drop those, if asked)."""
    if int(train_labels.min()) < 0 or int(train_labels.max()) >= len(names):
        raise SourceError(f"labels of {cfg.source!r} run outside 0..{len(names) - 1} (the {len(names)} class names)")
    counts = torch.bincount(train_labels, minlength=len(names))
    empty = [names[i] for i in (counts == 0).nonzero().flatten().tolist()]
    dropped: list[str] = []
    if empty and not cfg.drop_empty_classes:
        shown = ", ".join(repr(n) for n in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise SourceError(f"{len(empty)} of the {len(names)} classes of {cfg.source!r} have no images in split "
                          f"{cfg.split!r} ({shown}); pass --drop-empty-classes to drop them")
    if empty:
        keep = (counts > 0).nonzero().flatten()
        remap = torch.full((len(names),), -1, dtype=torch.long)
        remap[keep] = torch.arange(len(keep))
        train_labels = remap[train_labels]
        if test_labels is not None:
            rows = remap[test_labels] >= 0
            test_images, test_labels = test_images[rows], remap[test_labels[rows]]
        dropped, names = empty, [names[i] for i in keep.tolist()]
    if len(names) < 2:
        raise SourceError(f"{cfg.source!r} has {len(names)} class{'es' if len(names) != 1 else ''} with images "
                          f"({', '.join(repr(n) for n in names)}); classification needs at least 2")
    return train_labels, test_images, test_labels, names, dropped


def load_real(cfg: SourceConfig, pixel_space: str = "normalized", seed: int = 0,
              zca_eps: float = 0.1, dataset=None) -> RealData:
    """Load, decode (once, cached) and describe the real data of ``cfg``; with ``dataset`` (a datasets
    Dataset or DatasetDict in memory) decode that instead, named ``cfg.source`` and read with ``cfg``'s
    split and column options (a Dataset is the ``cfg.split`` split).

    Refused (one :class:`SourceError` line): an empty split, fewer than two classes, and classes
    without train images -- unless ``cfg.drop_empty_classes``, which drops them (and their test images)
    and remaps the labels to 0..K'-1, recorded as ``dropped_classes`` in the source info."""
    cfg.check()
    folder = Path(cfg.source).expanduser()
    if dataset is None and cfg.source != EMBEDDED and is_idx_folder(folder):
        tensors, class_names, info, test_name = _idx_source(cfg, folder)
    else:
        tensors, class_names, info, test_name = _hf_source(cfg, dataset)
    train_images, train_labels = tensors["train_images"], tensors["train_labels"].long()
    if train_images.shape[0] == 0:
        raise SourceError(f"split {cfg.split!r} of {cfg.source!r} is empty")
    test_images = tensors["test_images"] if test_name is not None else None
    test_labels = tensors["test_labels"].long() if test_name is not None else None
    train_labels, test_images, test_labels, class_names, dropped = _check_classes(
        cfg, train_labels, test_images, test_labels, class_names)
    if dropped:
        info = {**info, "dropped_classes": dropped}
    if test_name is not None:
        test_desc = {"split": test_name, "carved": False}
    else:
        keep, held = _carve_holdout(train_labels, cfg.holdout_fraction, seed)
        test_images, test_labels = train_images[held], train_labels[held]
        train_images, train_labels = train_images[keep], train_labels[keep]
        left = torch.bincount(train_labels, minlength=len(class_names))
        if int(left.min()) == 0:
            raise SourceError(f"class {class_names[int(left.argmin())]!r} of {cfg.source!r} has too few images "
                              "to carve a test split from train; give a test split (--test-split)")
        test_desc = {"split": f"{cfg.split} (carved)", "carved": True, "fraction": cfg.holdout_fraction,
                     "seed": seed, "stratified": True}

    info = {**info, **{k: v for k, v in asdict(cfg).items() if k in ("subset", "split", "revision")},
            "test": test_desc,
            "num_train": int(train_images.shape[0]), "num_test": int(test_images.shape[0])}
    return RealData(train_images=train_images, train_labels=train_labels, test_images=test_images,
                    test_labels=test_labels, class_names=class_names,
                    pixel_space=fit_pixel_space(train_images, pixel_space, zca_eps), info=info)


def fit_pixel_space(train_images: torch.Tensor, kind: str, zca_eps: float = 0.1) -> PixelSpace:
    """The pixel space ``kind`` of uint8 train images: per-channel mean and std of the train split and,
    for ``zca``, the ZCA whitening fitted on the normalised train images."""
    unit = train_images.float().div_(255.0)
    mean = unit.mean(dim=(0, 2, 3)).tolist()
    std = unit.std(dim=(0, 2, 3)).clamp(min=1e-6).tolist()
    zca = None
    if kind == "zca":
        norm = (unit - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        zca = ZCA.fit(norm, eps=zca_eps)
    return PixelSpace(kind, mean, std, zca)


def in_pixel_space(real: RealData, kind: str, zca_eps: float = 0.1) -> RealData:
    """``real`` in pixel space ``kind`` (the same uint8 images; ``real`` itself when it is there already),
    as :func:`load_real` would have given it."""
    space = real.pixel_space
    if space.kind == kind and (kind != "zca" or space.zca.eps == zca_eps):
        return real
    return dataclasses.replace(real, pixel_space=fit_pixel_space(real.train_images, kind, zca_eps))
