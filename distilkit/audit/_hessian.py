"""Curvature of the training loss: Hessian-vector products, Hutchinson's trace, power iteration.

The loss is the mean cross-entropy (hard or soft targets) over a whole image set, as a function of
all trainable parameters of a model. Nothing here materialises the Hessian: every quantity is built
from Hessian-vector products (double backward). Large sets are processed in chunks — the Hessian of
a mean is the size-weighted sum of the chunks' Hessians, so the result does not depend on the chunk
size — and several probe vectors share one forward/backward pass through ``is_grads_batched``
(a vmap over the second backward).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from distilkit.models.device_policy import device_policy
from distilkit.train import soft_cross_entropy


def trainable_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in trainable_parameters(model))


def hessian_vector_products(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, vectors: torch.Tensor,
                            chunk_size: int = 512, batched: bool | None = None) -> torch.Tensor:
    """``H @ v`` for each row ``v`` of ``vectors`` [P, D] (D = number of trainable parameters, in
    ``model.parameters()`` order); H is the Hessian of the mean loss over all of ``images``.

    ``batched`` pushes all P vectors through one double-backward per chunk (vmap); otherwise one
    double-backward per vector, reusing the chunk's graph. None: the model's device policy decides
    (the loop on CPUs, vmap on accelerators).
    """
    params = trainable_parameters(model)
    n, p = images.shape[0], vectors.shape[0]
    device = params[0].device
    if batched is None:
        batched = device_policy(device).batched_hvp
    vectors = vectors.to(device)
    shaped = [chunk.reshape(p, *param.shape) for chunk, param in
              zip(vectors.split([q.numel() for q in params], dim=1), params, strict=True)]
    out = torch.zeros_like(vectors)
    for start in range(0, n, chunk_size):
        x = images[start : start + chunk_size].to(device)
        y = targets[start : start + chunk_size].to(device)
        loss = soft_cross_entropy(model(x), y) * (x.shape[0] / n)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        if batched:
            hv = torch.autograd.grad(grads, params, grad_outputs=shaped, is_grads_batched=True)
            out += torch.cat([h.reshape(p, -1) for h in hv], dim=1)
        else:
            for i in range(p):
                hv = torch.autograd.grad(grads, params, grad_outputs=[s[i] for s in shaped], retain_graph=i < p - 1)
                out[i] += torch.cat([h.reshape(-1) for h in hv])
    return out.detach()


@dataclass
class TraceEstimate:
    """Hutchinson's estimate of tr(H): the mean of ``values`` (one v^T H v per Rademacher probe)."""

    trace: float
    probes: int
    converged: bool
    values: list[float] = field(default_factory=list)

    @property
    def standard_error(self) -> float:
        if len(self.values) < 2:
            return float("nan")
        return float(torch.tensor(self.values, dtype=torch.float64).std() / len(self.values) ** 0.5)


def hutchinson_trace(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator,
                     max_probes: int = 100, tol: float = 1e-3, probe_batch: int = 10, chunk_size: int = 512,
                     batched: bool | None = None) -> TraceEstimate:
    """tr(H) by Hutchinson's estimator with Rademacher probes and PyHessian's stopping rule.

    Probes are drawn one after another from ``generator``; after each one the running mean is
    compared with the previous running mean and the estimate stops when
    ``|mean_t - mean_{t-1}| / (|mean_{t-1}| + 1e-6) < tol`` or after ``max_probes``. ``probe_batch``
    probes are evaluated per pass; probes computed past the stopping point are not used, so the
    estimate is the same for any ``probe_batch``.
    """
    model.eval()
    dim = num_parameters(model)
    values: list[float] = []
    while len(values) < max_probes:
        count = min(probe_batch, max_probes - len(values))
        probes = torch.randint(0, 2, (count, dim), generator=generator).float().mul_(2).sub_(1)
        products = hessian_vector_products(model, images, targets, probes, chunk_size, batched)
        for q in (probes * products.cpu()).sum(1).tolist():
            previous = sum(values) / len(values) if values else None
            values.append(q)
            mean = sum(values) / len(values)
            if previous is not None and abs(mean - previous) / (abs(previous) + 1e-6) < tol:
                return TraceEstimate(mean, len(values), True, values)
    return TraceEstimate(sum(values) / len(values), len(values), False, values)


def top_eigenvalue(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator,
                   max_iterations: int = 100, tol: float = 1e-3, chunk_size: int = 512) -> tuple[float, int]:
    """The Hessian eigenvalue of largest magnitude by power iteration; returns (eigenvalue, iterations)."""
    model.eval()
    v = torch.randn(1, num_parameters(model), generator=generator, dtype=torch.float32)
    v /= v.norm()
    eigenvalue = None
    for iteration in range(1, max_iterations + 1):
        hv = hessian_vector_products(model, images, targets, v, chunk_size).cpu()
        estimate = float((v * hv).sum())
        v = hv / hv.norm().clamp_min(1e-30)
        if eigenvalue is not None and abs(estimate - eigenvalue) / (abs(eigenvalue) + 1e-6) < tol:
            return estimate, iteration
        eigenvalue = estimate
    return eigenvalue, max_iterations
