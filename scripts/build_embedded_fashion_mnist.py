"""Build the embedded default dataset shipped inside distilkit.

Reads the full Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (IDX gzip files),
takes a seeded class-balanced subset of the official train split and of the official test split,
and writes a Hugging Face Hub-layout folder (``data/*.parquet`` + ``README.md``) to
``distilkit/data/embedded/fashion_mnist``.

    apt-get install -y dataset-fashion-mnist
    python scripts/build_embedded_fashion_mnist.py [--train-per-class 600] [--test-per-class 200]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from distilkit.data.idx import FASHION_MNIST_CLASSES as CLASS_NAMES
from distilkit.data.idx import read_idx

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
OUT_DIR = Path(__file__).resolve().parents[1] / "distilkit" / "data" / "embedded" / "fashion_mnist"

CARD = """---
license: mit
pretty_name: Fashion-MNIST (class-balanced subset embedded in distilkit)
task_categories:
- image-classification
size_categories:
- 1K<n<10K
source_datasets:
- zalando-datasets/fashion_mnist
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
---

# Fashion-MNIST subset (distilkit's embedded default)

A seeded, class-balanced subset of Fashion-MNIST: {train_per_class} images per class from the
official train split and {test_per_class} per class from the official test split (28x28 grayscale,
10 classes). Built by `scripts/build_embedded_fashion_mnist.py` (seed {seed}) from Debian's
`dataset-fashion-mnist` package.

Fashion-MNIST is Copyright (c) 2017 Zalando SE, released under the MIT License.
Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
Learning Algorithms", arXiv:1708.07747, 2017. https://github.com/zalandoresearch/fashion-mnist
"""


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", type=Path, default=DEBIAN_DIR)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from datasets import ClassLabel, Dataset, Features, Image

    rng = np.random.default_rng(args.seed)
    features = Features({"image": Image(), "label": ClassLabel(names=CLASS_NAMES)})
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=args.out.parent))
    (tmp / "data").mkdir()
    for split, prefix, per_class in (("train", "train", args.train_per_class),
                                     ("test", "t10k", args.test_per_class)):
        images = read_idx(args.source_dir / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(args.source_dir / f"{prefix}-labels-idx1-ubyte.gz")
        keep = balanced_subset(labels, per_class, rng)
        ds = Dataset.from_dict({"image": list(images[keep]), "label": labels[keep].astype(int).tolist()},
                               features=features)
        ds.to_parquet(str(tmp / "data" / f"{split}-00000-of-00001.parquet"))
    (tmp / "README.md").write_text(CARD.format(train_per_class=args.train_per_class,
                                               test_per_class=args.test_per_class, seed=args.seed))
    if args.out.exists():
        shutil.rmtree(args.out)
    tmp.rename(args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
