"""The ConvNet family of the dataset-distillation literature (DC/DSA/DM/MTT and the study).

Per block: Conv3x3 -> norm -> ReLU -> pool. For 28x28 inputs the first convolution pads by 3 so
the feature maps are 32x32, as in the reference implementation. ``embed`` returns the flattened
features before the classifier (what distribution matching compares); ``block_outputs`` returns the
output of every conv block (what multi-layer distribution matching compares). On CPUs a large
batch runs through the network in cache-sized chunks of images (:data:`CPU_CHUNK_BYTES`), and where
no gradient flows the first convolution and its instance norm run as one product
(:func:`folded_conv_instance_norm`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


class AvgPool2x2(nn.Module):
    """2x2 average pooling, stride 2 (``nn.AvgPool2d(2)``: an odd last row/column is dropped).

    On the CPU it runs as one matrix product: each pair of NCHW rows (a [2W] vector) times a fixed
    [2W, W/2] matrix of 0.25s. PyTorch's NCHW ``avg_pool2d`` CPU kernel took a quarter of DM's
    real-side forward time (one core, a 32x128x32x32 batch: 80 ms, the GEMM 11 ms; the backward
    121 vs 37 ms for both passes); the GEMM gives the same values (each output is 0.25 x the sum of
    four inputs, summed with exact zeros). On GPUs the native kernel is used.
    """

    def __init__(self) -> None:
        super().__init__()
        self._matrices: dict[tuple, torch.Tensor] = {}

    def _matrix(self, width: int, like: torch.Tensor) -> torch.Tensor:
        key = (width, like.dtype, like.device)
        if key not in self._matrices:
            half = width // 2
            rows = torch.arange(2 * width)
            column = (rows % width) // 2
            matrix = torch.zeros(2 * width, half, dtype=like.dtype, device=like.device)
            keep = column < half
            matrix[rows[keep], column[keep]] = 0.25
            self._matrices[key] = matrix
        return self._matrices[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return nn.functional.avg_pool2d(x, 2)
        *lead, height, width = x.shape
        if height % 2:
            x = x[..., : height - 1, :]
        pairs = x.reshape(-1, 2 * width)  # rows 2i and 2i+1 side by side
        return (pairs @ self._matrix(width, x)).reshape(*lead, height // 2, width // 2)


# On CPUs a batch is split into chunks of images whose first-block feature maps take at most this many
# bytes (32 images for ConvNet w128 on 32x32 maps, 128 for w32), when every image is normalised on its
# own (not BatchNorm). Measured on a 2-core AVX2 CPU, 1 thread, ConvNet-3 w128, 256 images:
# forward 730 -> 418 ms, forward+backward 1885 -> 1224 ms (w32: 50 -> 46, 142 -> 138 ms): the
# 128 MB first-block maps of a whole batch stream through memory, a 16 MB chunk stays in cache.
CPU_CHUNK_BYTES = 16 << 20


def folded_conv_instance_norm(x: torch.Tensor, conv: nn.Conv2d, norm: nn.GroupNorm) -> torch.Tensor:
    """``norm(conv(x))`` for a stride-1 convolution followed by an instance norm, as one product.

    Per image and output channel c the convolution is ``w_c . patch + b_c`` over the patch matrix,
    so the instance norm's mean is ``w_c . mu + b_c`` and its variance ``w_c^T Sigma w_c``, where mu
    and Sigma are the mean and covariance of the image's patches (9 x in_channels values each). The
    output is ``gamma_c / sqrt(w_c^T Sigma w_c + eps) * w_c . (patch - mu) + beta_c``: the conv bias
    cancels, and the conv's output and the norm's two passes over it are replaced by one batched
    product per image with its own scaled weights. The values, and the gradient with respect to the
    input, equal the two layers' within float32 rounding (centred patches: relative error to float64
    4e-7 to 1e-6 for both, also on near-constant and DSA-augmented images; tests/test_models_dsa.py).
    Used only where nothing is differentiated: the conv bias would get no gradient, and the fold's
    backward is slower than the layers' (DM's synthetic side, 500 images forward and
    backward at w128: 1.15 against 1.00 s). Measured on a 2-core AVX2 CPU, the embedding of 2560 images
    (DM's real side at batch_real 256), median of 5: ConvNet-3 w128 5.32 -> 4.51 s on one thread,
    2.93 -> 2.68 s on two; w32 0.70 -> 0.63 s on one thread.
    """
    n = x.shape[0]
    out_channels, (out_h, out_w) = conv.out_channels, _conv_output_size(x, conv)
    patches = F.unfold(x, conv.kernel_size, padding=conv.padding)  # [n, k, positions]
    centred = patches - patches.mean(2, keepdim=True)
    covariance = torch.bmm(centred, centred.transpose(1, 2)).div_(patches.shape[2])  # [n, k, k]
    weight = conv.weight.reshape(out_channels, -1)
    variance = ((weight @ covariance) * weight).sum(-1)  # [n, out]: w_c^T Sigma w_c
    scale = norm.weight * torch.rsqrt(variance + norm.eps)
    out = torch.baddbmm(norm.bias.view(1, -1, 1), scale.unsqueeze(2) * weight, centred)
    return out.view(n, out_channels, out_h, out_w)


def _conv_output_size(x: torch.Tensor, conv: nn.Conv2d) -> tuple[int, int]:
    (kh, kw), (ph, pw) = conv.kernel_size, conv.padding
    return x.shape[2] + 2 * ph - kh + 1, x.shape[3] + 2 * pw - kw + 1


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
        height, width_px = image_size
        if (height, width_px) == (28, 28):
            height, width_px = 32, 32
        self._first_map_pixels = height * width_px  # the first block's feature-map size (sizes CPU chunks)
        layers: list[nn.Module] = []
        channels = in_channels
        for block in range(depth):
            padding = 3 if block == 0 and tuple(image_size) == (28, 28) else 1
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=padding))
            layers.append(_norm_layer(norm, width, (height, width_px)))
            layers.append(nn.ReLU(inplace=True))
            if pooling != "none":
                layers.append(AvgPool2x2() if pooling == "avgpooling" else nn.MaxPool2d(2))
                height, width_px = height // 2, width_px // 2
            channels = width
        if height < 1 or width_px < 1:
            raise ValueError(f"image size {tuple(image_size)} is too small for depth {depth}")
        self.features = nn.Sequential(*layers)
        self._batch_coupled = norm == "batchnorm"  # batch statistics: chunks would change the result
        self._instance_norm = norm == "instancenorm"
        self.feature_dim = channels * height * width_px
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        chunk = self._cpu_chunk(x)
        if chunk is None:
            return self._features(x).flatten(1)
        return torch.cat([self._features(part).flatten(1) for part in x.split(chunk)])

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every conv block (after its pooling), first to last; the last one, flattened,
        is :meth:`embed`."""
        chunk = self._cpu_chunk(x)
        if chunk is not None:
            per_chunk = [self._block_outputs(part) for part in x.split(chunk)]
            return [torch.cat(block) for block in zip(*per_chunk, strict=True)]
        return self._block_outputs(x)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self._folds(x):
            return self.features[2:](folded_conv_instance_norm(x, self.features[0], self.features[1]))
        return self.features(x)

    def _block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        modules = list(self.features)
        first = 0
        if self._folds(x):
            x, first = folded_conv_instance_norm(x, modules[0], modules[1]), 2
        for i in range(first, len(modules)):
            x = modules[i](x)
            if i + 1 == len(modules) or isinstance(modules[i + 1], nn.Conv2d):
                outputs.append(x)
        return outputs

    def _folds(self, x: torch.Tensor) -> bool:
        """Whether the first conv and its instance norm run folded: on a CPU, where no gradient flows
        through them (see :func:`folded_conv_instance_norm`)."""
        if x.device.type != "cpu" or not self._instance_norm:
            return False
        tensors = [x, *self.features[:2].parameters()]
        if any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors):
            return False  # inside vmap/grad: a wrapped tensor's requires_grad does not say whether it is differentiated
        return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)

    def _cpu_chunk(self, x: torch.Tensor) -> int | None:
        """Images per chunk for ``x`` on a CPU, or None to run the batch whole (GPU, BatchNorm, small)."""
        if x.device.type != "cpu" or self._batch_coupled:
            return None
        first = self.features[0]
        chunk = max(1, CPU_CHUNK_BYTES // (x.element_size() * first.out_channels * self._first_map_pixels))
        return chunk if x.shape[0] > chunk else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
