"""The ConvNet family of the dataset-distillation literature (DC/DSA/DM/MTT and the study).

Per block: Conv3x3 -> norm -> ReLU -> 2x2 pool. For 28x28 inputs the first convolution pads by 3
so the feature maps are 32x32, as in the reference implementation. ``embed`` returns the flattened
features before the classifier (what distribution matching compares); ``block_outputs`` returns
the output of every block (what multi-layer distribution matching compares). On a CPU both run by
the faster paths of :mod:`distilkit.models.fast_cpu`, which compute the same function.
"""

from __future__ import annotations

import torch
from torch import nn

from distilkit.models import fast_cpu

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
POOLINGS = ("avgpooling", "maxpooling", "none")


def _norm_layer(norm: str, channels: int, spatial: tuple[int, int]) -> nn.Module:
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "layernorm":
        return nn.LayerNorm([channels, *spatial], elementwise_affine=True)
    if norm == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)}")


class ConvNet(nn.Module):
    """ConvNet-D{depth}-W{width}: ``depth`` conv blocks of ``width`` channels and a linear head."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        width: int = 128,
        depth: int = 3,
        norm: str = "instancenorm",
        pooling: str = "avgpooling",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
        reference_size = tuple(image_size) == (28, 28)
        height, width_px = (32, 32) if reference_size else image_size
        layers: list[nn.Module] = []
        channels = in_channels
        for block in range(depth):
            padding = 3 if block == 0 and reference_size else 1
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=padding),
                       _norm_layer(norm, width, (height, width_px)), nn.ReLU(inplace=True)]
            if pooling != "none":
                layers.append(nn.AvgPool2d(2) if pooling == "avgpooling" else nn.MaxPool2d(2))
                height, width_px = height // 2, width_px // 2
            channels = width
        if height < 1 or width_px < 1:
            raise ValueError(f"image size {tuple(image_size)} is too small for depth {depth}")
        self.norm = norm
        self.block_length = 3 if pooling == "none" else 4  # layers per block in ``features``
        self.features = nn.Sequential(*layers)
        self.feature_dim = channels * height * width_px
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened output of the last block: the classifier's input."""
        if fast_cpu.applies(x):
            return fast_cpu.embed(self, x)
        return self.features(x).flatten(1)

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every conv block (after its pooling), first to last; the last one, flattened,
        is :meth:`embed`."""
        if fast_cpu.applies(x):
            return fast_cpu.block_outputs(self, x)
        outputs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if (i + 1) % self.block_length == 0:
                outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
