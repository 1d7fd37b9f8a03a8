"""AlexNet and VGG-11 as the dataset-distillation literature uses them for cross-architecture tests.

Both follow DC's ``networks.py`` (VICO-UoE/DatasetCondensation): AlexNet with five convolutions
(128-192-256-192-192) and three max-poolings, no normalisation; VGG-11 with the 64-M-128-M-256-256-M-
512-512-M-512-512-M stack and instance norm (``vgg11``) or batch norm (``vgg11-bn``), a 512-wide linear
head. DC pads MNIST-sized (28 px) inputs in the first convolution so they reach 32 px; here the first
padding grows by ``(32 - side) // 2`` for any side below 32, so the net fits the image size. timm has no
AlexNet, and its ``vgg11`` is the ImageNet model (a 4096-wide 7x7 convolutional head, 132M parameters,
five poolings that take 28 px to nothing), so neither comes from timm.
"""

from __future__ import annotations

import torch
from torch import nn

VGG11_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def _stem_padding(base: int, image_size: tuple[int, int]) -> int:
    side = min(image_size)
    return base + max(0, (32 - side) // 2)


class AlexNet(nn.Module):
    """DC's AlexNet (no normalisation); ``embed`` gives the flattened features before the classifier."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 128, 5, padding=_stem_padding(2, image_size)), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(128, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(192, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        with torch.no_grad():
            width = self.features(torch.zeros(1, in_channels, *image_size)).numel()
        self.fc = nn.Linear(width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


class VGG11(nn.Module):
    """DC's VGG-11 (instance norm as ``GroupNorm(C, C)``, or batch norm), global average pooling, linear head."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], norm: str = "instancenorm"):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, item in enumerate(VGG11_CFG):
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            padding = _stem_padding(1, image_size) if i == 0 else 1
            norm_layer = nn.BatchNorm2d(item) if norm == "batchnorm" else nn.GroupNorm(item, item, affine=True)
            layers += [nn.Conv2d(channels, item, 3, padding=padding), norm_layer, nn.ReLU(inplace=True)]
            channels = item
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(channels, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


CLASSIC_MODELS = {
    "alexnet": lambda c, k, size: AlexNet(c, k, size),
    "vgg11": lambda c, k, size: VGG11(c, k, size, norm="instancenorm"),
    "vgg11-bn": lambda c, k, size: VGG11(c, k, size, norm="batchnorm"),
}


def cross_pool(base: str) -> list[str]:
    """``--models cross``: the cross-architecture pool around the protocol's ConvNet ``base``.

    The ConvNet itself, the same ConvNet with batch norm, timm's ResNet-18 (CIFAR stem), VGG-11 and
    AlexNet (both DC-style, see the module docstring).
    """
    convnet = base if base.startswith("convnet") else "convnet"
    parts = convnet.split("-")
    bn = "-".join([p for p in parts if p not in ("in", "ln", "gn", "nn", "bn")] + ["bn"])
    return [convnet, bn, "timm/resnet18", "vgg11", "alexnet"]


def expand_models(names: list[str], base: str) -> list[str]:
    """Replace the name ``cross`` in a model list by :func:`cross_pool` (duplicates dropped, order kept)."""
    out: list[str] = []
    for name in names:
        for model in cross_pool(base) if name == "cross" else [name]:
            if model not in out:
                out.append(model)
    return out
