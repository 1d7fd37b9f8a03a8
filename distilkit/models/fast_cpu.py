"""The ConvNet's fast CPU paths, behind one switch.

:class:`~distilkit.models.convnet.ConvNet` is a plain network. On a CPU (where
:func:`~distilkit.models.device_policy.device_policy` says the fast paths apply) and while the
switch is on (:func:`set_fast_cpu`, on by default), its ``embed`` and ``block_outputs`` run here
instead, computing the same function a faster way:

- **Pooling by sums.** PyTorch's NCHW ``avg_pool2d`` CPU kernel is slow, so 2x2 average pooling
  adds the two rows, then the two columns of each window as strided slices (:func:`avg_pool2x2`);
  its backward spreads the output gradient by one matrix product with a fixed matrix of 0.25s.
- **The folded first block.** The first convolution and its instance norm run as one product per
  image from the mean and covariance of the image's patches (:func:`folded_conv_instance_norm`)
  where nothing is differentiated, and with a closed-form backward to the parameters
  (:class:`FoldedFirstBlock`) where the parameters are but the images are not (training on data,
  DC/DSA's real side). Where the images are differentiated the layers run.
- **Cache-sized chunks.** A large batch runs in chunks of images whose first-block feature maps
  take at most :data:`CHUNK_BYTES` (never with BatchNorm, whose statistics couple the batch).

Every path gives the layers' values and gradients within float32 rounding (tests/test_models_dsa.py);
what each buys is measured in the README's benchmarks section.

Public PyTorch extension points against private probes. The pooling is an ``autograd.Function``
with ``setup_context``, a generated ``vmap`` rule and a ``jvp``: PyTorch's documented way to extend
``torch.func``, so it runs inside ``vmap``/``grad`` transforms and under forward-mode AD without
asking where it is. A ``torch.library`` custom op was tried first and measured as fast, but its
``register_autograd`` formula does not run under ``torch.func.grad`` (pytorch/pytorch#168393),
which TracIn's per-sample gradients use on CPUs. The fold keeps one private probe,
:func:`_under_transform`, and stays out of transforms and forward-mode AD: there its closed-form
backward never pays (functorch runs a Function's backward with gradients enabled, where the fold
recomputes the two layers, so the layers alone are faster), and a fold made to run there would
need vmap and forward-mode rules for nothing. Staying out needs to know that a transform is at
work, which PyTorch offers no public query for; the fold asks the private bindings there, and only
there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distilkit.models.device_policy import device_policy

# Images per chunk: as many as keep the first block's feature maps within this many bytes
# (32 images for ConvNet w128 on 32x32 maps, 128 for w32): such a chunk stays in cache.
CHUNK_BYTES = 16 << 20

_enabled = True


def set_fast_cpu(enabled: bool) -> None:
    """Switch the fast CPU paths on or off for every ConvNet (on by default; off runs the plain layers)."""
    global _enabled
    _enabled = bool(enabled)


def fast_cpu_enabled() -> bool:
    """Whether the fast CPU paths are switched on."""
    return _enabled


def applies(x: torch.Tensor) -> bool:
    """Whether a ConvNet's forward on ``x`` takes the fast CPU paths: switched on, and ``x``'s device
    policy says so."""
    return _enabled and device_policy(x.device).fast_cpu


def embed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net.embed(x)`` by the fast paths: the flattened output of the last block, chunk by chunk."""
    chunk = chunk_size(net, x)
    if chunk is None:
        return _run(net, x, every_block=False)[-1].flatten(1)
    return torch.cat([_run(net, part, every_block=False)[-1].flatten(1) for part in x.split(chunk)])


def block_outputs(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``net.block_outputs(x)`` by the fast paths: every block's output, chunk by chunk."""
    chunk = chunk_size(net, x)
    if chunk is None:
        return _run(net, x, every_block=True)
    per_chunk = [_run(net, part, every_block=True) for part in x.split(chunk)]
    return [torch.cat(block) for block in zip(*per_chunk, strict=True)]


def avg_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling with stride 2 (``F.avg_pool2d(x, 2)``: an odd last row or column is dropped),
    by sums where the fast paths apply to ``x``, else by PyTorch's kernel."""
    if not applies(x):
        return F.avg_pool2d(x, 2)
    height, width = x.shape[-2:]
    if height % 2 or width % 2:
        x = x[..., : height - height % 2, : width - width % 2]
    if torch.is_grad_enabled() and x.requires_grad:
        return _PoolBySums.apply(x)
    return _pool_by_sums(x)


def chunk_size(net: nn.Module, x: torch.Tensor) -> int | None:
    """Images per chunk for ``x``, or None to run the batch whole (BatchNorm, or a batch within one chunk)."""
    if net.norm == "batchnorm":
        return None
    conv = net.features[0]
    (kh, kw), (ph, pw) = conv.kernel_size, conv.padding
    first_map_pixels = (x.shape[2] + 2 * ph - kh + 1) * (x.shape[3] + 2 * pw - kw + 1)
    chunk = max(1, CHUNK_BYTES // (x.element_size() * conv.out_channels * first_map_pixels))
    return chunk if x.shape[0] > chunk else None


def _run(net: nn.Module, x: torch.Tensor, every_block: bool) -> list[torch.Tensor]:
    """The layers of ``net.features`` with the fast paths: every block's output, or only the last."""
    layers = list(net.features)
    outputs = []
    first = 0
    folded = _folded_first_block(net, x)
    if folded is not None:
        x, first = folded, 2
    for i in range(first, len(layers)):
        x = avg_pool2x2(x) if isinstance(layers[i], nn.AvgPool2d) else layers[i](x)
        if every_block and (i + 1) % net.block_length == 0:
            outputs.append(x)
    return outputs if every_block else [x]


def _pool_by_sums(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling of an even-sized NCHW ``x``: the two rows of each window added, then the
    two columns, as strided slices (two vectorised passes that read the input once)."""
    n, c, height, width = x.shape
    rows = x.reshape(n, c, height // 2, 2, width)  # a view unless x is not contiguous
    pairs = torch.add(rows[:, :, :, 0], rows[:, :, :, 1]).view(n, c, height // 2, width // 2, 2)
    return torch.add(pairs[..., 0], pairs[..., 1]).mul_(0.25)


_POOL_MATRICES: dict[tuple, torch.Tensor] = {}


def _pool_matrix(width: int, like: torch.Tensor) -> torch.Tensor:
    """The [2W, W/2] matrix mapping a pair of input rows to their pooled row (0.25 where a column is
    in a window), cached per width, dtype and device."""
    key = (width, like.dtype, like.device)
    if key not in _POOL_MATRICES:
        rows = torch.arange(2 * width)
        matrix = torch.zeros(2 * width, width // 2, dtype=like.dtype, device=like.device)
        matrix[rows, (rows % width) // 2] = 0.25
        _POOL_MATRICES[key] = matrix
    return _POOL_MATRICES[key]


class _PoolBySums(torch.autograd.Function):
    """:func:`_pool_by_sums` forward; backward: each output-gradient row [W/2] times the pooling
    matrix's transpose gives the two input rows of its windows. The backward is one product of its
    input, so it is differentiable again (DC's synthetic side takes gradients of gradients); the
    generated vmap rule and the jvp (the pooling is linear) let it run inside ``torch.func``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:  # noqa: D102 (see the class)
        return _pool_by_sums(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: D102 (see the class)
        ctx.input_shape = inputs[0].shape

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:  # noqa: D102 (see the class)
        matrix = _pool_matrix(ctx.input_shape[-1], grad_out)
        return (grad_out.reshape(-1, grad_out.shape[-1]) @ matrix.t()).view(ctx.input_shape)

    @staticmethod
    def jvp(ctx, x_tangent: torch.Tensor) -> torch.Tensor:  # noqa: D102 (see the class)
        return _pool_by_sums(x_tangent)


def fold_mode(net: nn.Module, x: torch.Tensor) -> str | None:
    """How the first conv and its instance norm run on ``x``: ``"values"`` (nothing is differentiated:
    :func:`folded_conv_instance_norm`), ``"parameters"`` (the parameters are, the images are not:
    :class:`FoldedFirstBlock`) or None (the layers: the images are differentiated, the norm is not an
    instance norm, or a ``torch.func`` transform or forward-mode AD is at work)."""
    if net.norm != "instancenorm":
        return None
    tensors = [x, *net.features[:2].parameters()]
    if _under_transform(tensors):
        return None
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
        return "values"
    return None if x.requires_grad else "parameters"


def _under_transform(tensors: list[torch.Tensor]) -> bool:
    """Whether a ``torch.func`` transform wraps any of ``tensors`` or a forward-mode AD level is open.

    The one private probe of the fast paths (see the module docstring for why the fold needs it):
    PyTorch has no public query for either, so this asks functorch's binding and the forward-AD
    module's level counter.
    """
    if getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0:
        return True
    return any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def _folded_first_block(net: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The first conv and its instance norm run folded (by :func:`fold_mode`), or None to run the layers."""
    mode = fold_mode(net, x)
    conv, norm = net.features[0], net.features[1]
    if mode == "values":
        return folded_conv_instance_norm(x, conv, norm)
    if mode == "parameters":
        return FoldedFirstBlock.apply(x, conv.weight, conv.bias, norm.weight, norm.bias, conv.padding, norm.eps)
    return None


def folded_conv_instance_norm(x: torch.Tensor, conv: nn.Conv2d, norm: nn.GroupNorm) -> torch.Tensor:
    """``norm(conv(x))`` for a stride-1 convolution followed by an instance norm, as one product.

    Per image and output channel c the convolution is ``w_c . patch + b_c`` over the patch matrix,
    so the instance norm's mean is ``w_c . mu + b_c`` and its variance ``w_c^T Sigma w_c``, where mu
    and Sigma are the mean and covariance of the image's patches (9 x in_channels values each). The
    output is ``gamma_c / sqrt(w_c^T Sigma w_c + eps) * w_c . (patch - mu) + beta_c``: the conv bias
    cancels, and the conv's output and the norm's two passes over it are replaced by one batched
    product per image with its own scaled weights (``beta`` rides in it as one more column against a
    row of ones under the patches, so the output is written once). The values, and the gradient with
    respect to the input, equal the two layers' within float32 rounding (centred patches: relative
    error to float64 4e-7 to 1e-6 for both, also on near-constant and DSA-augmented images). This
    plain form is used only where nothing is differentiated (its autograd backward is slower than the
    layers'); where only the parameters are, :class:`FoldedFirstBlock` gives it a closed-form backward.
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
