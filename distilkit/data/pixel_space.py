"""The pixel space a distilled set lives in, and the map from real uint8 images into it.

``raw``: x / 255.  ``normalized``: (x / 255 - mean) / std per channel.  ``zca``: normalised, then
ZCA-whitened with a matrix fitted on the real train split (stored as ``zca.safetensors``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distilkit.data.zca import ZCA

PIXEL_SPACES = ("raw", "normalized", "zca")
ZCA_FILE = "zca.safetensors"


@dataclass
class PixelSpace:
    kind: str
    mean: list[float]
    std: list[float]
    zca: ZCA | None = None

    def __post_init__(self) -> None:
        if self.kind not in PIXEL_SPACES:
            raise ValueError(f"unknown pixel space {self.kind!r}; choose from {', '.join(PIXEL_SPACES)}")

    def from_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """Map real images (uint8 [N, C, H, W], or float in [0, 1]) into this space (float32)."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if self.kind == "raw":
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
        if self.kind == "zca":
            x = self.zca.apply(x)
        return x

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """Map images in this space back to [0, 1]-scale pixels (for display; ZCA is left whitened)."""
        if self.kind == "normalized":
            mean = torch.tensor(self.mean).view(1, -1, 1, 1)
            std = torch.tensor(self.std).view(1, -1, 1, 1)
            return images * std + mean
        return images

    def to_card(self) -> dict:
        card: dict = {"space": self.kind, "mean": self.mean, "std": self.std}
        if self.kind == "zca":
            card["zca"] = {"file": ZCA_FILE, "eps": self.zca.eps, "fitted_on": "normalized real train split",
                           "apply": "x_zca = (((x / 255 - mean) / std).flatten() - zca.mean) @ zca.matrix"}
        return card
