"""``import``: make a distilled set produced elsewhere a first-class :class:`DistilledSet`.

Readers, registered by format name (:data:`READERS`), turn a file or folder into images + labels:

- ``torch``: a ``.pt``/``.pth`` file read with ``torch.load(..., weights_only=True)`` only (a file
  that needs code unpickled is refused). Three layouts: a dict of tensors (``{"data": [N,C,H,W],
  "label": [N]}`` as the study's sets are stored; also ``images``/``image_syn``/``x`` and
  ``labels``/``label_syn``/``y``, an optional ``lr``/``syn_lr``), a tuple/list ``(images, labels)``,
  and DC/DSA/DM's ``res_*.pt`` (``{"data": [[image_syn, label_syn], ...], "accs_all_exps": ...}``,
  one pair per experiment; ``experiment`` picks one).
- ``mtt``: MTT's ``images_best.pt`` / ``labels_best.pt`` / ``lr_best.pt`` (the folder or any one of them).
- ``npz`` and ``safetensors``: arrays under ``images``/``data``/``x`` and ``labels``/``label``/``y``.
- ``image-folder``: one sub-folder per class of PNG/JPEG files (decoupled methods' layout).

Labels may also come from a separate tensor file (``labels_file``): hard class ids [N] or soft
labels [N, K] (probabilities). For an image folder the rows follow the sorted class folders, then
the sorted file names within each. The images are taken to be in the pixel space the user names;
image files are raw pixels and are mapped into that space.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from distilkit.data.pixel_space import PIXEL_SPACES, PixelSpace
from distilkit.data.real import RealData
from distilkit.data.sources import SourceConfig, load_real
from distilkit.data.zca import ZCA
from distilkit.distilled import DistilledSet
from distilkit.errors import DistilkitError
from distilkit.runtime import distilkit_version

IMAGE_KEYS = ("images", "image", "data", "x", "image_syn", "images_syn")
LABEL_KEYS = ("labels", "label", "y", "targets", "label_syn", "labels_syn")
LR_KEYS = ("lr", "syn_lr", "learned_lr")
MTT_FILES = ("images_best.pt", "labels_best.pt", "lr_best.pt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Loaded:
    """What a reader found: images (float, or uint8 for image files), labels, and the files read."""

    images: torch.Tensor
    labels: torch.Tensor | None
    files: list[Path]
    format: str
    learned_lr: float | None = None
    method: str | None = None
    notes: dict = field(default_factory=dict)


@dataclass
class ImportOptions:
    experiment: int = 0
    channels: int | None = None
    image_size: tuple[int, int] | None = None
    class_names: list[str] = field(default_factory=list)


Reader = Callable[[Path, ImportOptions], Loaded]
READERS: dict[str, Reader] = {}


def register_reader(name: str) -> Callable[[Reader], Reader]:
    def decorate(fn: Reader) -> Reader:
        READERS[name] = fn
        return fn

    return decorate


# ----------------------------------------------------------------------------------- torch files
def torch_load_safe(path: Path):
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings, lists, dicts, nothing else."""
    import pickle

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise DistilkitError(f"{path.name} needs arbitrary Python objects unpickled; distilkit reads tensor "
                                 "files only with torch.load(weights_only=True) and refuses it (save plain tensors "
                                 "or use .npz/.safetensors)") from err
        raise DistilkitError(f"cannot read {path.name} as a torch tensor file: {_first_line(err)}") from err
    except Exception as err:  # a damaged or foreign file: torch/pickle raise many types (RuntimeError, IndexError...)
        raise DistilkitError(f"cannot read {path.name} as a torch tensor file: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _pick(mapping: dict, keys: tuple[str, ...]):
    for key in keys:
        if key in mapping:
            return key, mapping[key]
    return None, None


def _as_tensor(value, what: str, path: Path) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (float, int)):
        return torch.tensor(value)
    raise DistilkitError(f"{path.name}: {what} is a {type(value).__name__}, not a tensor")


def _lr_value(value, path: Path) -> float:
    lr = _as_tensor(value, "the learning rate", path)
    if lr.numel() != 1:
        raise DistilkitError(f"{path.name}: the learning rate has {lr.numel()} values, expected one")
    return float(lr.reshape(()).item())


@register_reader("torch")
def read_torch(path: Path, options: ImportOptions) -> Loaded:
    obj = torch_load_safe(path)
    keys = "/".join(IMAGE_KEYS[:4]) + " and " + "/".join(LABEL_KEYS[:3])
    if isinstance(obj, dict) and isinstance(obj.get("data"), (list, tuple)):  # DC/DSA/DM res_*.pt
        experiments = obj["data"]
        k = options.experiment
        if not experiments:
            raise DistilkitError(f"{path.name} is a DC-style results file with no experiments in 'data'")
        if not 0 <= k < len(experiments):
            raise DistilkitError(f"--experiment {k} out of range: {path.name} holds {len(experiments)} experiment(s)")
        pair = experiments[k]
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise DistilkitError(f"{path.name}: experiment {k} is not an [image_syn, label_syn] pair")
        match = re.match(r"res_([A-Za-z0-9]+)_", path.name)
        return Loaded(_as_tensor(pair[0], "image_syn", path), _as_tensor(pair[1], "label_syn", path), [path],
                      "dc-res", method=match.group(1).lower() if match else None,
                      notes={"experiment": k, "experiments": len(experiments)})
    if isinstance(obj, dict):
        ikey, images = _pick(obj, IMAGE_KEYS)
        lkey, labels = _pick(obj, LABEL_KEYS)
        if ikey is None:
            raise DistilkitError(f"{path.name}: no image tensor; expected a dict with keys {keys} "
                                 f"(found: {', '.join(map(str, obj)) or 'none'}), a tuple (images, labels) "
                                 "or DC's res_*.pt")
        _, lr = _pick(obj, LR_KEYS)
        return Loaded(_as_tensor(images, ikey, path), None if lkey is None else _as_tensor(labels, lkey, path),
                      [path], "torch-dict", learned_lr=None if lr is None else _lr_value(lr, path))
    if isinstance(obj, (list, tuple)):
        if len(obj) not in (2, 3):
            raise DistilkitError(f"{path.name}: a tuple/list must be (images, labels[, lr]); it has {len(obj)} items")
        lr = _lr_value(obj[2], path) if len(obj) == 3 else None
        return Loaded(_as_tensor(obj[0], "images", path), _as_tensor(obj[1], "labels", path), [path],
                      "torch-tuple", learned_lr=lr)
    if isinstance(obj, torch.Tensor):
        return Loaded(obj.detach().cpu(), None, [path], "torch-tensor")
    raise DistilkitError(f"{path.name} holds a {type(obj).__name__}; expected a dict with keys {keys}, "
                         "a tuple (images, labels) or DC's res_*.pt")


@register_reader("mtt")
def read_mtt(path: Path, options: ImportOptions) -> Loaded:
    folder = path if path.is_dir() else path.parent
    images_file, labels_file, lr_file = (folder / name for name in MTT_FILES)
    if not images_file.is_file():
        raise DistilkitError(f"{folder} has no {MTT_FILES[0]} (MTT's layout: {', '.join(MTT_FILES)})")
    images = _as_tensor(torch_load_safe(images_file), MTT_FILES[0], images_file)
    files = [images_file]
    labels = None
    if labels_file.is_file():
        labels = _as_tensor(torch_load_safe(labels_file), MTT_FILES[1], labels_file)
        files.append(labels_file)
    lr = None
    if lr_file.is_file():
        lr = _lr_value(torch_load_safe(lr_file), lr_file)
        files.append(lr_file)
    return Loaded(images, labels, files, "mtt", learned_lr=lr, method="mtt")


# ------------------------------------------------------------------------------- array files
def _arrays_from_mapping(arrays: dict, path: Path, fmt: str) -> Loaded:
    ikey, images = _pick(arrays, IMAGE_KEYS)
    lkey, labels = _pick(arrays, LABEL_KEYS)
    if ikey is None:
        raise DistilkitError(f"{path.name}: no image array; expected keys images/data/x (and labels/label/y), "
                             f"found: {', '.join(arrays) or 'none'}")
    _, lr = _pick(arrays, LR_KEYS)
    return Loaded(_as_tensor(images, ikey, path), None if lkey is None else _as_tensor(labels, lkey, path), [path],
                  fmt, learned_lr=None if lr is None else _lr_value(lr, path))


def read_arrays(path: Path, fmt: str) -> dict:
    """All arrays of a ``.npz`` (never unpickling object arrays) or ``.safetensors`` file, by key."""
    if fmt == "npz":
        try:
            with np.load(str(path), allow_pickle=False) as npz:
                return {key: np.asarray(npz[key]) for key in npz.files}
        except ValueError as err:  # object arrays need pickle, which is never allowed
            raise DistilkitError(f"{path.name} holds pickled object arrays; distilkit reads plain numeric arrays "
                                 "only") from err
        except (OSError, EOFError) as err:
            raise DistilkitError(f"cannot read {path.name} as .npz: {err}") from err
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises SafetensorError/OSError for damaged files
        raise DistilkitError(f"cannot read {path.name} as .safetensors: {str(err).splitlines()[0]}") from err


@register_reader("npz")
def read_npz(path: Path, options: ImportOptions) -> Loaded:
    return _arrays_from_mapping(read_arrays(path, "npz"), path, "npz")


@register_reader("safetensors")
def read_safetensors(path: Path, options: ImportOptions) -> Loaded:
    return _arrays_from_mapping(read_arrays(path, "safetensors"), path, "safetensors")


# ----------------------------------------------------------------------------- image folders
def _class_index(folders: list[str], class_names: list[str]) -> list[int]:
    """Map class-folder names to class ids: by name, by integer id, else by sorted position."""
    if all(name in class_names for name in folders):
        return [class_names.index(name) for name in folders]
    if all(name.isdigit() for name in folders):
        ids = [int(name) for name in folders]
        if max(ids) >= len(class_names):
            raise DistilkitError(f"class folder {max(ids)} is out of range: the source has {len(class_names)} classes")
        return ids
    if len(folders) == len(class_names):
        return list(range(len(folders)))  # ImageFolder's convention: sorted folder names
    raise DistilkitError(f"class folders ({', '.join(folders[:5])}...) are neither the source's class names, "
                         f"nor class ids, nor {len(class_names)} folders (one per class)")


@register_reader("image-folder")
def read_image_folder(path: Path, options: ImportOptions) -> Loaded:
    from PIL import Image, UnidentifiedImageError

    folders = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DistilkitError(f"{path} has no class sub-folders (expected one sub-folder of PNG/JPEG files per class)")
    ids = _class_index(folders, options.class_names)
    mode = "L" if options.channels == 1 else "RGB"
    arrays, labels, files = [], [], []
    for name, label in zip(folders, ids, strict=True):
        for file in sorted(p for p in (path / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(file) as image:
                    image = image.convert(mode)
                    if options.image_size is not None and image.size != options.image_size[::-1]:
                        h, w = options.image_size
                        raise DistilkitError(f"{name}/{file.name} is {image.size[0]}x{image.size[1]} px; the source's "
                                             f"images are {w}x{h}")
                    arrays.append(np.asarray(image, dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as err:
                raise DistilkitError(f"cannot read image {name}/{file.name}: {err}") from err
            labels.append(label)
            files.append(file)
    if not arrays:
        raise DistilkitError(f"{path} has class folders but no PNG/JPEG images")
    block = np.stack(arrays)
    block = block[:, None] if block.ndim == 3 else block.transpose(0, 3, 1, 2)
    return Loaded(torch.from_numpy(np.ascontiguousarray(block)), torch.tensor(labels), files, "image-folder")


def detect_format(path: Path) -> str:
    """The reader for ``path``: by folder layout or file suffix."""
    if not path.exists():
        raise DistilkitError(f"{path} does not exist")
    if path.is_dir():
        if (path / MTT_FILES[0]).is_file():
            return "mtt"
        return "image-folder"
    if path.name in MTT_FILES:
        return "mtt"
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return "torch"
    if suffix == ".npz":
        return "npz"
    if suffix == ".safetensors":
        return "safetensors"
    raise DistilkitError(f"cannot tell the format of {path.name}: expected a .pt/.pth, .npz or .safetensors file, "
                         "MTT's images_best.pt folder, or an image folder")


def read_labels_file(path: Path) -> torch.Tensor:
    """A separate label tensor file (.pt, .npz, .safetensors): hard ids [N] or soft labels [N, K]."""
    if not path.is_file():
        raise DistilkitError(f"labels file {path} does not exist")
    fmt = detect_format(path)
    if fmt in ("torch", "mtt"):
        obj = torch_load_safe(path)
        if isinstance(obj, dict):
            key, obj = _pick(obj, LABEL_KEYS + ("soft_labels", "soft_label"))
            if key is None:
                raise DistilkitError(f"{path.name}: no label tensor (keys labels/label/y/soft_labels)")
        return _as_tensor(obj, "labels", path)
    arrays = read_arrays(path, fmt)
    key, value = _pick(arrays, LABEL_KEYS + ("soft_labels", "soft_label"))
    if key is None:
        if len(arrays) != 1:
            raise DistilkitError(f"{path.name}: no label array (keys labels/label/y/soft_labels)")
        value = next(iter(arrays.values()))
    return _as_tensor(value, "labels", path)


# ------------------------------------------------------------------------------------- checks
def split_labels(labels: torch.Tensor, n: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate labels for ``n`` images: hard ids [N] (any integral dtype) or soft [N, K] probabilities."""
    if labels.shape[0] != n:
        raise DistilkitError(f"{labels.shape[0]} labels for {n} images: the counts must match")
    if labels.is_floating_point() and not torch.isfinite(labels).all():
        raise DistilkitError("the labels contain NaN or Inf")
    if labels.ndim == 2:
        if labels.shape[1] != num_classes:
            raise DistilkitError(f"soft labels have {labels.shape[1]} columns; the source has {num_classes} classes")
        soft = labels.float()
        if (soft < 0).any() or not torch.allclose(soft.sum(1), torch.ones(n), atol=1e-3):
            raise DistilkitError("soft labels must be probabilities (non-negative rows summing to 1); "
                                 "apply a softmax to logits first")
        return soft.argmax(1), soft
    if labels.ndim != 1:
        raise DistilkitError(f"labels have shape {list(labels.shape)}; expected [N] class ids or [N, K] soft labels")
    if labels.is_floating_point():
        if not torch.equal(labels, labels.round()):
            raise DistilkitError("hard labels are fractional; expected integer class ids")
    hard = labels.long()
    if n and (hard.min() < 0 or hard.max() >= num_classes):
        raise DistilkitError(f"labels out of range: found {int(hard.min())}..{int(hard.max())}, the source has "
                             f"{num_classes} classes (0..{num_classes - 1})")
    return hard, None


def check_images(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
        need = ", ".join(map(str, shape))
        raise DistilkitError(f"images have shape {list(images.shape)}; the source needs [N, {need}] "
                             "(N, channels, height, width)")
    if images.shape[0] == 0:
        raise DistilkitError("the file holds no images")
    if not images.is_floating_point() and images.dtype != torch.uint8:
        raise DistilkitError(f"images are {images.dtype}; expected float (or uint8 for raw pixels)")
    images = images.float()
    if not torch.isfinite(images).all():
        raise DistilkitError("the images contain NaN or Inf")
    return images


def file_digest(files: list[Path]) -> str:
    """sha256 of one file, or of the (relative name, content) sequence of several."""
    digest = hashlib.sha256()
    if len(files) == 1:
        digest.update(files[0].read_bytes())
        return digest.hexdigest()
    for file in files:
        digest.update(f"{file.parent.name}/{file.name}".encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def build_pixel_space(kind: str, real: RealData, mean: list[float] | None, std: list[float] | None,
                      zca_eps: float) -> PixelSpace:
    """The pixel space the imported images live in: raw, normalised with the source's statistics
    (or the given ones), or ZCA fitted on the normalised source train split (the reference code's way)."""
    if kind not in PIXEL_SPACES:
        raise DistilkitError(f"unknown pixel space {kind!r}; choose from {', '.join(PIXEL_SPACES)}")
    c = real.image_shape[0]
    unit = None
    if mean is None or std is None:
        unit = real.train_images.float().div_(255.0)
    mean = list(mean) if mean is not None else unit.mean(dim=(0, 2, 3)).tolist()
    std = list(std) if std is not None else unit.std(dim=(0, 2, 3)).clamp(min=1e-6).tolist()
    for name, values in (("--mean", mean), ("--std", std)):
        if len(values) != c:
            raise DistilkitError(f"{name} has {len(values)} value(s); the source has {c} channel(s)")
    if any(s <= 0 for s in std):
        raise DistilkitError("--std values must be positive")
    zca = None
    if kind == "zca":
        unit = real.train_images.float().div_(255.0) if unit is None else unit
        norm = (unit - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        zca = ZCA.fit(norm, eps=zca_eps)
    return PixelSpace(kind, [float(m) for m in mean], [float(s) for s in std], zca)


# ------------------------------------------------------------------------------------ import
def import_set(
    path: str | Path,
    source: str,
    pixel_space: str | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    zca_from_source: bool = False,
    zca_eps: float = 0.1,
    labels_file: str | Path | None = None,
    lr: float | None = None,
    method_name: str | None = None,
    experiment: int = 0,
    seed: int = 0,
) -> DistilledSet:
    """Read ``path`` (format detected), check it against ``source`` and return the DistilledSet."""
    path = Path(path).expanduser()
    fmt = detect_format(path)
    if zca_from_source:
        if pixel_space not in (None, "zca"):
            raise DistilkitError(f"--zca-from-source contradicts --pixel-space {pixel_space}")
        pixel_space = "zca"
    if pixel_space is None:
        if fmt != "image-folder":
            raise DistilkitError("say which pixel space the file's tensors are in: --pixel-space raw|normalized|zca "
                                 "(normalized: the source's mean/std or --mean/--std; zca: fitted on the source)")
        pixel_space = "raw"  # image files hold raw pixels
    if (mean is None) != (std is None):
        raise DistilkitError("--mean and --std go together")
    if (mean is not None) and pixel_space == "raw":
        raise DistilkitError("--mean/--std apply to the normalized and zca pixel spaces, not raw")
    if lr is not None and not lr > 0:
        raise DistilkitError(f"--lr must be positive, got {lr}")
    src = SourceConfig(source=source)
    real = load_real(src, pixel_space="raw", seed=seed)
    c, h, w = real.image_shape
    options = ImportOptions(experiment=experiment, channels=c, image_size=(h, w), class_names=real.class_names)
    loaded = READERS[fmt](path, options)
    space = build_pixel_space(pixel_space, real, mean, std, zca_eps)

    if loaded.images.dtype == torch.uint8:  # image files: raw pixels, mapped into the chosen space
        check_images(loaded.images, (c, h, w))
        images = space.from_uint8(loaded.images)
    else:
        images = check_images(loaded.images, (c, h, w))
    files = list(loaded.files)
    raw_labels = loaded.labels
    if labels_file is not None:
        labels_path = Path(labels_file).expanduser()
        raw_labels = read_labels_file(labels_path)
        files.append(labels_path)
    if raw_labels is None:
        raise DistilkitError(f"{path.name} holds no labels; pass --labels FILE")
    hard, soft = split_labels(raw_labels, images.shape[0], real.num_classes)
    counts = torch.bincount(hard, minlength=real.num_classes)
    if (counts == 0).any():
        missing = [real.class_names[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
        raise DistilkitError(f"no images for class(es) {', '.join(missing[:5])}: a distilled set needs every class")
    learned_lr = lr if lr is not None else loaded.learned_lr
    if learned_lr is not None and not (np.isfinite(learned_lr) and learned_lr > 0):
        raise DistilkitError(f"the file's learning rate {learned_lr} is not a positive number; override it with --lr")
    ipc = int(counts.max()) if bool((counts == counts[0]).all()) else int(round(images.shape[0] / real.num_classes))
    method = method_name or loaded.method or "imported"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}", method):
        raise DistilkitError(f"--method-name {method!r}: use letters, digits and _.+- (at most 64 characters)")
    imported = {
        "format": loaded.format, "file": path.name, "sha256": file_digest(files),
        "files": [f.name for f in files] if len(files) <= 8 else len(files),
        "pixel_space": pixel_space, "labels": "soft" if soft is not None else "hard",
        "learned_lr_from": "--lr" if lr is not None else ("file" if loaded.learned_lr is not None else None),
        **loaded.notes,
    }
    if labels_file is not None:
        imported["labels_file"] = Path(labels_file).name
    if not bool((counts == counts[0]).all()):
        imported["class_counts"] = counts.tolist()
    source_cfg = {k: v for k, v in src.__dict__.items()}
    return DistilledSet(
        images=images, labels=hard, class_names=real.class_names, pixel_space=space, method=method, ipc=ipc,
        soft_labels=soft, learned_lr=learned_lr,
        config={"method": method, "ipc": ipc, "source": source_cfg, "pixel_space": pixel_space, "seed": seed,
                "zca_eps": zca_eps if pixel_space == "zca" else None},
        source=real.info,
        provenance={"imported": imported, "distilkit_version": distilkit_version(), "seed": seed,
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
    )


def default_import_out(dset: DistilledSet) -> Path:
    """``distilled/<source>-<method>-ipc<IPC>-imported``, beside what ``distill`` writes."""
    source = str(dset.config["source"]["source"])
    name = "fashion-mnist" if source == "embedded" else Path(source.rstrip("/")).name
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "set"
    return Path("distilled") / f"{slug}-{dset.method}-ipc{dset.ipc}-imported"
