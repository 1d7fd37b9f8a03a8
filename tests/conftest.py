"""Test isolation: caches in a temp dir, no network, small thread count."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="distilkit-tests-"))
os.environ.setdefault("DISTILKIT_CACHE", str(_SESSION_DIR / "cache"))
os.environ["HF_HOME"] = str(_SESSION_DIR / "hf")
os.environ["HF_DATASETS_CACHE"] = str(_SESSION_DIR / "hf" / "datasets")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["ACCELERATE_USE_CPU"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from distilkit.checkpoint import Checkpointer  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def accelerator():
    from distilkit.runtime import make_accelerator

    return make_accelerator()


@pytest.fixture(scope="session")
def embedded_real():
    from distilkit.data.sources import SourceConfig, load_real

    return load_real(SourceConfig())


@pytest.fixture(scope="module")
def smoke_set(tmp_path_factory, accelerator):
    """A dm IPC-2 set of the embedded data at the smoke preset, distilled once per test module."""
    from distilkit.config import DistillConfig
    from distilkit.pipeline import distill

    out = tmp_path_factory.mktemp("smoke") / "set"
    distill(DistillConfig(method="dm", ipc=2, preset="smoke", out=str(out)), accelerator=accelerator)
    return out


def write_image_dataset(folder: Path, n_per_class: int = 6, size: int = 12, mode: str = "RGB",
                        classes: tuple[str, ...] = ("cat", "dog", "fox"), splits=("train", "test"),
                        label_name: str = "label", image_name: str = "image") -> Path:
    """A Hub-layout folder (README + data/<split>-*.parquet) of random PIL images with a ClassLabel."""
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    for split in splits:
        images, labels = [], []
        for c in range(len(classes)):
            for _ in range(n_per_class):
                arr = rng.integers(0, 255, size=(size, size, channels), dtype=np.uint8)
                images.append(PILImage.fromarray(arr.squeeze(2) if channels == 1 else arr, mode=mode))
                labels.append(c)
        features = Features({image_name: Image(), label_name: ClassLabel(names=list(classes))})
        Dataset.from_dict({image_name: images, label_name: labels}, features=features).to_parquet(
            str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    (folder / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# toy\n")
    return folder


def tree_digest(root: Path) -> str:
    """A checksum of every path under ``root`` (names, kinds and file contents): equal before and after
    a refused command means it changed nothing."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"d" if path.is_dir() else path.read_bytes())
    return digest.hexdigest()


def one_error_line(result, *needles: str) -> str:
    """Assert a CLI result is a refusal: exit status 2, exactly one ``error:`` line on stderr naming every
    needle, no traceback. Returns the line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


class Crash(RuntimeError):
    """What :class:`CrashingCheckpointer` raises: the stand-in for a killed run."""


class CrashingCheckpointer(Checkpointer):
    """Saves like the real one, then dies right after the checkpoint at ``crash_at`` (a killed run)."""

    def __init__(self, *args, crash_at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crash_at = crash_at

    def save(self, tensors, state) -> None:
        super().save(tensors, state)
        if state["step"] == self.crash_at:
            raise Crash
