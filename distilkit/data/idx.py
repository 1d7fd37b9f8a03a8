"""IDX files (the MNIST family's format), e.g. Debian's ``dataset-fashion-mnist``.

Layout: bytes 0-1 zero, byte 2 the data type (0x08 = uint8), byte 3 the number of dimensions,
then one big-endian uint32 size per dimension, then the data. Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SPLIT_PREFIXES = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find_idx_file(folder: Path, split: str, kind: str) -> Path | None:
    """``kind`` is "images" or "labels"; looks for e.g. ``t10k-images-idx3-ubyte(.gz)``."""
    prefix = SPLIT_PREFIXES.get(split, split)
    dims = "idx3" if kind == "images" else "idx1"
    for suffix in (".gz", ""):
        path = folder / f"{prefix}-{kind}-{dims}-ubyte{suffix}"
        if path.is_file():
            return path
    return None


def is_idx_folder(folder: Path) -> bool:
    return folder.is_dir() and find_idx_file(folder, "train", "images") is not None


def idx_class_names(folder: Path, num_classes: int) -> list[str]:
    if "fashion" in str(folder.resolve()).lower() and num_classes == 10:
        return list(FASHION_MNIST_CLASSES)
    return [str(i) for i in range(num_classes)]
