"""The yardsticks of the speed benchmarks: DM and DC/DSA written as their reference code writes them.

A straightforward implementation loops over classes (per class: sample its real batch, augment it,
run the network, then the synthetic images of that class) on a ConvNet built from plain PyTorch
modules. :class:`ReferenceConvNet` is that network holding distilkit's weights, so a benchmark
compares implementations of the same function, not different networks. The loops take the real
images and DSA parameters they use as arguments, so a benchmark can feed both implementations the
same draw and check that they agree before it times them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ReferenceConvNet(nn.Module):
    """distilkit's ConvNet rebuilt from plain PyTorch modules, sharing its parameters: the network a
    straightforward implementation would run (pooling by ``nn.AvgPool2d``, no CPU-specific paths)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.features = net.features
        self.classifier = net.classifier

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def class_groups(count: int, c: int) -> torch.Tensor:
    """DSA group ids selecting class ``c``'s parameter set for ``count`` images."""
    return torch.full((count,), c, dtype=torch.long)


def dm_per_class_loss(net: nn.Module, real_by_class: list[torch.Tensor], images: torch.Tensor, ipc: int,
                      dsa, params) -> torch.Tensor:
    """DM's loss as its reference code computes it: per class, embed the augmented real batch and
    detach it, embed the augmented synthetic images, add the squared distance of the means."""
    loss = images.new_zeros(())
    for c, x_real in enumerate(real_by_class):
        out_real = net.embed(dsa(x_real, params, class_groups(len(x_real), c))).detach()
        out_syn = net.embed(dsa(images[c * ipc : (c + 1) * ipc], params, class_groups(ipc, c)))
        loss = loss + ((out_real.mean(0) - out_syn.mean(0)) ** 2).sum()
    return loss


def dc_distance_wb(g_real: torch.Tensor, g_syn: torch.Tensor) -> torch.Tensor:
    """DC's ``distance_wb``: per output row of a weight, 1 - cos; biases and norm affines count 0."""
    if g_real.ndim == 1:
        return g_syn.new_zeros(())
    rows_real, rows_syn = g_real.reshape(g_real.shape[0], -1), g_syn.reshape(g_syn.shape[0], -1)
    dot = (rows_real * rows_syn).sum(-1)
    return (1 - dot / (rows_real.norm(dim=-1) * rows_syn.norm(dim=-1) + 1e-6)).sum()


def dc_per_class_loss(net: nn.Module, real_by_class: list[torch.Tensor], images: torch.Tensor, ipc: int,
                      dsa, params, batch_real: int) -> torch.Tensor:
    """DC/DSA's matching loss as its reference code computes it: per class, the real gradient of the
    cross-entropy (detached), the synthetic gradient with its graph, DC's distance; ``dsa=None``
    is DC. The real loss is scaled like distilkit's (sum / batch_real, the mean over a full batch)."""
    weights = list(net.parameters())
    loss = images.new_zeros(())
    for c, x_real in enumerate(real_by_class):
        x_syn = images[c * ipc : (c + 1) * ipc]
        if dsa is not None:
            x_real = dsa(x_real, params, class_groups(len(x_real), c))
            x_syn = dsa(x_syn, params, class_groups(ipc, c))
        y_real = torch.full((len(x_real),), c, dtype=torch.long, device=images.device)
        loss_real = F.cross_entropy(net(x_real), y_real, reduction="sum") / batch_real
        g_real = [g.detach().clone() for g in torch.autograd.grad(loss_real, weights)]
        y_syn = torch.full((ipc,), c, dtype=torch.long, device=images.device)
        g_syn = torch.autograd.grad(F.cross_entropy(net(x_syn), y_syn), weights, create_graph=True)
        loss = loss + sum(dc_distance_wb(gr, gs) for gr, gs in zip(g_real, g_syn, strict=True))
    return loss
