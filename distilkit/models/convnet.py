"""The ConvNet family of the dataset-distillation literature (DC/DSA/DM/MTT and the study).

Per block: Conv3x3 -> norm -> ReLU -> pool. For 28x28 inputs the first convolution pads by 3 so
the feature maps are 32x32, as in the reference implementation. ``embed`` returns the flattened
features before the classifier (what distribution matching compares); ``block_outputs`` returns the
output of every conv block (what multi-layer distribution matching compares). On CPUs a large
batch runs through the network in cache-sized chunks of images (:data:`CPU_CHUNK_BYTES`), and
unless the images themselves are differentiated the first convolution and its instance norm run as
one product (:func:`folded_conv_instance_norm`; :class:`FoldedFirstBlock` where the parameters are).
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

    PyTorch's NCHW ``avg_pool2d`` CPU kernel is slow (it took a quarter of DM's real-side forward),
    so on CPUs the forward adds the two rows, then the two columns of each window as strided slices
    (:func:`_pool_by_sums`), and the backward spreads the output gradient by one matrix product: each
    output row (a [W/2] vector) times a fixed [W/2, 2W] matrix of 0.25s gives the two input rows of its
    windows. Both give the values of ``avg_pool2d`` (each output is 0.25 x the sum of four inputs).
    Measured on a 2-core AVX-512 CPU (2 threads, 32 x 128 x 32 x 32 input): forward by sums 1.0 ms,
    by the matrix product 2.9 ms, ``avg_pool2d`` 4.3 ms; the backward by the product 1.1-2.0 ms against
    2-3 ms for spreading by broadcast copies. An odd height or width, ``vmap``/``grad`` transforms and
    forward-mode AD run the matrix product both ways (plain differentiable ops); GPUs use the native
    kernel.
    """

    def __init__(self) -> None:
        super().__init__()
        self._matrices: dict[tuple, torch.Tensor] = {}

    def _matrix(self, width: int, like: torch.Tensor) -> torch.Tensor:
        """The [2W, W/2] matrix mapping a pair of rows to their pooled row."""
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
        if height % 2 == 0 and width % 2 == 0 and x.dim() == 4 and not _in_transform(x):
            if not (torch.is_grad_enabled() and x.requires_grad):
                return _pool_by_sums(x)
            return _PoolBySums.apply(x, self._matrix(width, x))
        if height % 2:
            x = x[..., : height - 1, :]
        pairs = x.reshape(-1, 2 * width)  # rows 2i and 2i+1 side by side
        return (pairs @ self._matrix(width, x)).reshape(*lead, height // 2, width // 2)


def _pool_by_sums(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling of an even-sized NCHW ``x``: the two rows of each window added, then the
    two columns, as strided slices (two vectorised passes that read the input once)."""
    n, c, height, width = x.shape
    rows = x.reshape(n, c, height // 2, 2, width)  # a view unless x is not contiguous
    pairs = torch.add(rows[:, :, :, 0], rows[:, :, :, 1]).view(n, c, height // 2, width // 2, 2)
    return torch.add(pairs[..., 0], pairs[..., 1]).mul_(0.25)


class _PoolBySums(torch.autograd.Function):
    """:func:`_pool_by_sums` forward, the pooling matrix's transpose backward (differentiable again:
    the backward is one product of its input, so gradients of gradients, as DC's synthetic side
    takes them, are exact)."""

    @staticmethod
    def forward(ctx, x, matrix):  # noqa: D102 (see the class)
        ctx.save_for_backward(matrix)
        ctx.input_shape = x.shape
        return _pool_by_sums(x)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102 (see the class)
        (matrix,) = ctx.saved_tensors
        grad = grad_out.reshape(-1, grad_out.shape[-1]) @ matrix.t()  # each output row -> its two input rows
        return grad.view(ctx.input_shape), None


def _in_transform(x: torch.Tensor) -> bool:
    """Whether ``x`` is inside a ``vmap``/``grad`` transform or a forward-mode AD level is open, where
    custom autograd Functions without transform rules must not run."""
    return torch._C._functorch.is_functorch_wrapped_tensor(x) or _forward_ad_active()


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
    product per image with its own scaled weights (``beta`` rides in it as one more column against a
    row of ones under the patches, so the output is written once). The values, and the gradient with respect to the
    input, equal the two layers' within float32 rounding (centred patches: relative error to float64
    4e-7 to 1e-6 for both, also on near-constant and DSA-augmented images; tests/test_models_dsa.py).
    This plain form is used only where nothing is differentiated (its autograd backward is slower
    than the layers': DM's synthetic side, 500 images forward and backward at w128, 1.15 against
    1.00 s); where only the parameters are, :class:`FoldedFirstBlock` gives it a closed-form backward.
    Measured on a 2-core AVX2 CPU, the embedding of 2560 images (DM's real side at batch_real 256),
    median of 5: ConvNet-3 w128 5.32 -> 4.51 s on one thread, 2.93 -> 2.68 s on two; w32 0.70 -> 0.63 s
    on one thread.
    """
    augmented, sigma_w, inv_std, (out_h, out_w) = _fold_statistics(x, conv.weight, conv.padding, norm.eps)
    out = torch.bmm(_fold_weights(conv.weight, norm.weight, norm.bias, inv_std), augmented)
    return out.view(x.shape[0], conv.out_channels, out_h, out_w)


def _fold_statistics(x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int], eps: float):
    """The fold's per-image pieces: the centred patches with a row of ones under them [n, k + 1,
    positions], ``Sigma w_c`` [n, out, k], ``1 / sqrt(w_c^T Sigma w_c + eps)`` [n, out] and the
    output's spatial size."""
    (kh, kw), out_channels = weight.shape[2:], weight.shape[0]
    out_size = (x.shape[2] + 2 * padding[0] - kh + 1, x.shape[3] + 2 * padding[1] - kw + 1)
    patches = F.unfold(x, (kh, kw), padding=padding)
    centred = patches - patches.mean(2, keepdim=True)
    covariance = torch.bmm(centred, centred.transpose(1, 2)).div_(patches.shape[2])  # [n, k, k]
    sigma_w = weight.reshape(out_channels, -1) @ covariance  # row c: Sigma w_c (Sigma is symmetric)
    variance = (sigma_w * weight.reshape(out_channels, -1)).sum(-1)
    augmented = F.pad(centred, (0, 0, 0, 1), value=1.0)
    return augmented, sigma_w, torch.rsqrt(variance + eps), out_size


def _fold_weights(weight: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
    """Each image's [out, k + 1] weights of the fold: ``gamma_c / sqrt(var_nc + eps) * w_c`` and ``beta_c``."""
    n, out_channels = inv_std.shape
    scaled = (gamma * inv_std).unsqueeze(2) * weight.reshape(out_channels, -1)
    return torch.cat([scaled, beta.view(1, -1, 1).expand(n, -1, 1)], 2)


class FoldedFirstBlock(torch.autograd.Function):
    """The folded first convolution and instance norm with a closed-form backward to the parameters.

    Used where the parameters are differentiated but the images are not (DC/DSA's real side, training
    on data). With ``M_n = G_n (P_n - mu_n)^T`` (one [out, k] product per image of the output gradient
    and the centred patches; the row of ones under them gives ``sum G_n`` in the same product),
    ``s = gamma / sqrt(w^T Sigma w + eps)`` and ``dL/ds_nc = M_nc . w_c``:

        dL/dw_c     = sum_n s_nc M_nc - dL/ds_nc gamma_c (w_c^T Sigma_n w_c + eps)^(-3/2) Sigma_n w_c
        dL/dgamma_c = sum_n dL/ds_nc / sqrt(w_c^T Sigma_n w_c + eps),   dL/dbeta_c = sum G_c,

    and 0 for the conv bias, which the norm cancels (the layers give it float rounding). That reads the
    output gradient once instead of the norm's backward writing the conv's output gradient and the
    conv's weight backward reading it again. Where a graph of the backward is asked for
    (``create_graph``: Hessian-vector products), or the images' gradient after all, the backward
    recomputes the two layers and differentiates them instead, so higher derivatives are exact.
    Measured by examples/bench_gradient_matching.py (see README).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, padding, eps):  # noqa: D102 (see the class)
        augmented, sigma_w, inv_std, (out_h, out_w) = _fold_statistics(x, weight, padding, eps)
        n, out_channels = x.shape[0], weight.shape[0]
        out = x.new_empty(n, out_channels, out_h, out_w)  # not a view: the ReLU after it works in place
        torch.bmm(_fold_weights(weight, gamma, beta, inv_std), augmented, out=out.view(n, out_channels, -1))
        ctx.save_for_backward(x, weight, bias, gamma, beta, augmented, sigma_w, inv_std)
        ctx.padding, ctx.eps = padding, eps
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102 (see the class)
        x, weight, bias, gamma, beta, augmented, sigma_w, inv_std = ctx.saved_tensors
        if torch.is_grad_enabled() or ctx.needs_input_grad[0]:
            return _recomputed_first_block_grads(ctx, grad_out, x, weight, bias, gamma, beta)
        n, out_channels = grad_out.shape[:2]
        grad = grad_out.reshape(n, out_channels, -1)
        flat_weight = weight.reshape(out_channels, -1)
        m_augmented = torch.bmm(grad, augmented.transpose(1, 2))  # [n, out, k + 1]: M_n, then sum G_n
        m = m_augmented[..., :-1]
        d_scale = (m * flat_weight).sum(-1)  # [n, out]
        d_weight = ((gamma * inv_std).unsqueeze(2) * m).sum(0)
        d_weight -= ((d_scale * gamma * inv_std.pow(3)).unsqueeze(2) * sigma_w).sum(0)
        d_bias = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[2] else None
        return (None, d_weight.view_as(weight), d_bias, (d_scale * inv_std).sum(0), m_augmented[..., -1].sum(0),
                None, None)


def _recomputed_first_block_grads(ctx, grad_out, x, weight, bias, gamma, beta):
    """:class:`FoldedFirstBlock`'s backward through the two layers themselves (differentiable)."""
    with torch.enable_grad():
        out = F.group_norm(F.conv2d(x, weight, bias, padding=ctx.padding), weight.shape[0], gamma, beta, ctx.eps)
    wanted = [t for t, need in zip((x, weight, bias, gamma, beta), ctx.needs_input_grad[:5], strict=True) if need]
    grads = iter(torch.autograd.grad(out, wanted, grad_out, create_graph=torch.is_grad_enabled()))
    return (*(next(grads) if need else None for need in ctx.needs_input_grad[:5]), None, None)


def _forward_ad_active() -> bool:
    """Whether a ``torch.autograd.forward_ad`` level is open (FoldedFirstBlock has no forward-mode rule)."""
    return getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0


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
        first = self._folded_first_block(x)
        return self.features(x) if first is None else self.features[2:](first)

    def _block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        modules = list(self.features)
        first = 0
        folded = self._folded_first_block(x)
        if folded is not None:
            x, first = folded, 2
        for i in range(first, len(modules)):
            x = modules[i](x)
            if i + 1 == len(modules) or isinstance(modules[i + 1], nn.Conv2d):
                outputs.append(x)
        return outputs

    def _folded_first_block(self, x: torch.Tensor) -> torch.Tensor | None:
        """The first conv and its instance norm run folded (on a CPU), or None to run the layers.

        Where nothing is differentiated: :func:`folded_conv_instance_norm`. Where the parameters are
        but the images are not: :class:`FoldedFirstBlock`. Where the images are (learned synthetic
        images), inside ``vmap``/``grad`` transforms, or under forward-mode AD: the layers.
        """
        mode = self._fold_mode(x)
        conv, norm = self.features[0], self.features[1]
        if mode == "values":
            return folded_conv_instance_norm(x, conv, norm)
        if mode == "parameters":
            return FoldedFirstBlock.apply(x, conv.weight, conv.bias, norm.weight, norm.bias, conv.padding, norm.eps)
        return None

    def _fold_mode(self, x: torch.Tensor) -> str | None:
        """``"values"``, ``"parameters"`` or None (see :meth:`_folded_first_block`)."""
        if x.device.type != "cpu" or not self._instance_norm:
            return None
        tensors = [x, *self.features[:2].parameters()]
        if any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors):
            return None  # inside vmap/grad: a wrapped tensor's requires_grad does not say whether it is differentiated
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
            return "values"
        if x.requires_grad or _forward_ad_active():
            return None
        return "parameters"

    def _cpu_chunk(self, x: torch.Tensor) -> int | None:
        """Images per chunk for ``x`` on a CPU, or None to run the batch whole (GPU, BatchNorm, small)."""
        if x.device.type != "cpu" or self._batch_coupled:
            return None
        first = self.features[0]
        chunk = max(1, CPU_CHUNK_BYTES // (x.element_size() * first.out_channels * self._first_map_pixels))
        return chunk if x.shape[0] > chunk else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
