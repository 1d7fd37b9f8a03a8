from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_image_dataset

from distilkit.data.sources import SourceConfig, detect_columns, load_real
from distilkit.errors import DistilkitError


def test_embedded_default(embedded_real):
    real = embedded_real
    assert real.train_images.dtype == torch.uint8
    assert real.train_images.shape == (6000, 1, 28, 28)
    assert real.test_images.shape == (2000, 1, 28, 28)
    assert real.class_names[0] == "T-shirt/top" and real.num_classes == 10
    assert torch.equal(real.class_counts, torch.full((10,), 600))
    assert real.info["test"] == {"split": "test", "carved": False}
    assert real.info["license"] == "mit"
    unit = real.train_images.float() / 255
    assert real.pixel_space.mean[0] == pytest.approx(unit.mean().item(), abs=1e-4)
    assert real.pixel_space.std[0] == pytest.approx(unit.std().item(), abs=1e-4)


def test_sample_per_class_is_balanced_and_distinct(embedded_real):
    idx = embedded_real.sample_per_class(7, torch.Generator().manual_seed(1))
    assert idx.shape == (10, 7)
    labels = embedded_real.train_labels[idx]
    assert torch.equal(labels, torch.arange(10).unsqueeze(1).expand(10, 7))
    assert len(set(idx.flatten().tolist())) == 70
    again = embedded_real.sample_per_class(7, torch.Generator().manual_seed(1))
    assert torch.equal(idx, again)
    with pytest.raises(ValueError):
        embedded_real.sample_per_class(601, torch.Generator())


def test_hub_layout_folder_rgb(tmp_path):
    folder = write_image_dataset(tmp_path / "toy", mode="RGB", size=12)
    real = load_real(SourceConfig(source=str(folder)))
    assert real.train_images.shape == (18, 3, 12, 12)
    assert real.class_names == ["cat", "dog", "fox"]
    assert real.info["license"] == "cc-by-4.0"
    assert not real.info["test"]["carved"]
    assert len(real.pixel_space.mean) == 3


def test_imagefolder_with_carved_holdout(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("apple", "pear"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (9, 9), dtype=np.uint8), mode="L").save(
                tmp_path / "imgs" / name / f"{i}.png")
    real = load_real(SourceConfig(source=str(tmp_path / "imgs"), holdout_fraction=0.2), seed=3)
    assert real.class_names == ["apple", "pear"]
    assert real.train_images.shape == (16, 1, 9, 9) and real.test_images.shape == (4, 1, 9, 9)
    assert real.info["test"]["carved"] and real.info["test"]["seed"] == 3
    assert torch.equal(torch.bincount(real.test_labels), torch.tensor([2, 2]))


def test_parquet_file_with_plain_int_labels_and_resize(tmp_path):
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    imgs = [PILImage.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)) for _ in range(12)]
    Dataset.from_dict({"img": imgs, "fine_label": [5, 7, 9] * 4},
                      features=Features({"img": Image(), "fine_label": Value("int64")})).to_parquet(
        str(tmp_path / "x.parquet"))
    real = load_real(SourceConfig(source=str(tmp_path / "x.parquet"), image_size=8, holdout_fraction=0.25))
    assert real.class_names == ["5", "7", "9"]
    assert real.train_images.shape[1:] == (3, 8, 8)
    assert set(real.train_labels.tolist()) == {0, 1, 2}


def test_missing_columns_and_sources(tmp_path):
    from datasets import Features, Image, Value

    with pytest.raises(DistilkitError, match="has no label column"):
        detect_columns(Features({"image": Image(), "caption": Value("string")}), None, None)
    with pytest.raises(DistilkitError, match="not in the dataset"):
        detect_columns(Features({"image": Image(), "label": Value("int64")}), "pixels", None)
    with pytest.raises(DistilkitError, match="does not exist|not found|cannot load"):
        load_real(SourceConfig(source=str(tmp_path / "nope")))


def _write_idx(path, array):
    import gzip
    import struct

    header = bytes([0, 0, 8, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for prefix, n in (("train", 40), ("t10k", 20)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    real = load_real(SourceConfig(source=str(folder)))
    assert real.train_images.shape == (40, 1, 28, 28) and real.test_images.shape == (20, 1, 28, 28)
    assert real.class_names[9] == "Ankle boot" and real.info["license"] == "mit"
    assert torch.equal(real.test_labels, torch.arange(20) % 10)
