"""RealData: the decoded real dataset every method, evaluation and audit works from."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch

from distilkit.data.pixel_space import PixelSpace
from distilkit.errors import ConfigError


@dataclass
class RealData:
    """Decoded real images (uint8 [N, C, H, W]) with labels, class names and provenance.

    Images stay uint8 in memory; :meth:`batch` converts only what a step needs into the pixel
    space. ``info`` records where the data came from (id, subset, split, revision, how the test
    split was obtained, licence) and is copied into every distilled set's card.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    pixel_space: PixelSpace
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.train_labels = self.train_labels.long()
        self.test_labels = self.test_labels.long()
        self.class_order = torch.argsort(self.train_labels, stable=True)
        self.class_counts = torch.bincount(self.train_labels, minlength=self.num_classes)
        self.class_offsets = torch.cumsum(self.class_counts, 0) - self.class_counts

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    def fingerprint(self) -> str:
        """A content hash of what a model trained on this data depends on: the source description (id,
        subset, split, revision, how the test split was obtained), the train images and labels, and the
        pixel space (kind, mean, std, the ZCA matrix). Caches of trained models and expert trajectories
        are keyed by it, so they are found again for the same data and never for other data."""
        digest = hashlib.sha256()
        digest.update(json.dumps({k: self.info.get(k) for k in ("id", "subset", "split", "revision", "test")},
                                 sort_keys=True, default=str).encode())
        digest.update(self.train_images.numpy().tobytes())
        digest.update(self.train_labels.numpy().tobytes())
        space = self.pixel_space
        digest.update(json.dumps([space.kind, space.mean, space.std]).encode())
        if space.zca is not None:
            digest.update(space.zca.matrix.numpy().tobytes())
        return digest.hexdigest()

    def batch(self, indices: torch.Tensor, split: str = "train") -> torch.Tensor:
        """Float images of ``indices`` in the pixel space."""
        images = self.train_images if split == "train" else self.test_images
        return self.pixel_space.from_uint8(images[indices])

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixel_space.from_uint8(self.test_images), self.test_labels

    def class_indices(self, label: int) -> torch.Tensor:
        start = int(self.class_offsets[label])
        return self.class_order[start : start + int(self.class_counts[label])]

    def require_per_class(self, n: int, what: str) -> None:
        """Refuse (one :class:`ConfigError` line) a per-class draw ``what`` of ``n`` images that the
        smallest class cannot give, e.g. ``--ipc`` or a method's ``batch_real``."""
        smallest = int(self.class_counts.min())
        if n > smallest:
            raise ConfigError(f"{what} {n} exceeds the smallest class "
                              f"({self.class_names[int(self.class_counts.argmin())]!r}: {smallest} images)")

    def sample_per_class(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` distinct random train indices per class, as a [num_classes, n] tensor (class-major).

        One vectorised draw for all classes: random keys over a padded [K, max_count] grid, the
        ``n`` smallest valid keys per row.
        """
        smallest = int(self.class_counts.min())
        if n > smallest:
            raise ConfigError(f"cannot draw {n} per class: the smallest class has {smallest} images")
        max_count = int(self.class_counts.max())
        keys = torch.rand(self.num_classes, max_count, generator=generator)
        keys[torch.arange(max_count).unsqueeze(0) >= self.class_counts.unsqueeze(1)] = 2.0
        positions = keys.topk(n, dim=1, largest=False).indices
        return self.class_order[self.class_offsets.unsqueeze(1) + positions]
