"""The convolution share of a matching step: its convolutions' arithmetic alone, as PyTorch runs it.

:func:`conv_floor_seconds` times the convolution calls a ConvNet step makes (``aten.convolution``
forward and ``aten.convolution_backward`` with the gradients asked for) on random tensors of each
conv layer's input shape, in batches of ``chunk`` images, and nothing else: no norms, activations,
pooling, data or Python. It is what any implementation that runs these layers with PyTorch's CPU
convolution kernels spends at least, so a step's time over it is the overhead left to remove. It is
an estimate, not a proof of a bound: the noise of a shared CPU is in it, and a step may compute a
layer another way (distilkit folds the first conv and its norm where no gradient flows).
"""

from __future__ import annotations

import time

import torch
from torch import nn


def conv_shapes(net: nn.Module, image_shape: tuple[int, ...]) -> list[tuple[nn.Conv2d, tuple[int, ...]]]:
    """Every Conv2d of ``net`` with the shape of one image's input to it, in call order.

    The probe runs with gradients on: without them distilkit's ConvNet folds its first convolution
    into the norm (:func:`distilkit.models.fast_cpu.folded_conv_instance_norm`) and the hook would
    never see that layer, although the layers' own computation, the yardstick's and every step that
    differentiates run it.
    """
    found: list[tuple[nn.Conv2d, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda m, args, out: found.append((m, tuple(args[0].shape[1:]))))
             for m in net.modules() if isinstance(m, nn.Conv2d)]
    device = next(net.parameters()).device
    try:
        with torch.enable_grad():
            net(torch.zeros(1, *image_shape, device=device, requires_grad=True))
    finally:
        for hook in hooks:
            hook.remove()
    return found


def conv_floor_seconds(net: nn.Module, image_shape: tuple[int, ...], images: int, weight_grad: bool,
                       input_grad: bool, chunk: int = 32, first_input_grad: bool = False) -> float:
    """Seconds for the convolutions of ``images`` images through ``net``: forward, and, if asked,
    the backward to the weights and/or inputs (the first layer's input gradient only with
    ``first_input_grad``: the images themselves are learned). The operands are made before the
    clock starts; one untimed warm-up chunk runs first."""
    layers = conv_shapes(net, image_shape)
    device = layers[0][0].weight.device
    counts = [min(chunk, images - first) for first in range(0, images, chunk)]
    inputs = {count: [_operands(conv, shape, count, device) for conv, shape in layers] for count in set(counts)}

    def run(count: int) -> None:
        for index, ((conv, _), (x, grad_out)) in enumerate(zip(layers, inputs[count], strict=True)):
            weight = conv.weight.detach()
            bias = conv.bias.detach() if conv.bias is not None else None
            args = (conv.stride, conv.padding, conv.dilation, False, (0, 0), conv.groups)
            torch.ops.aten.convolution(x, weight, bias, *args)
            wants_input = input_grad and (index > 0 or first_input_grad)
            if weight_grad or wants_input:
                mask = [wants_input, weight_grad, weight_grad and bias is not None]
                torch.ops.aten.convolution_backward(grad_out, x, weight, None, *args, mask)

    with torch.no_grad():
        run(counts[0])
        _synchronize(device)
        start = time.perf_counter()
        for count in counts:
            run(count)
        _synchronize(device)
        return time.perf_counter() - start


def _operands(conv: nn.Conv2d, shape: tuple[int, ...], count: int, device: torch.device):
    """A random input batch for ``conv`` and a random gradient of its output, made before timing."""
    with torch.no_grad():
        x = torch.randn(count, *shape, device=device)
        return x, torch.randn_like(conv(x))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
