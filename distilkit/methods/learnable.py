"""Shared pieces of the methods that learn images, labels or a learning rate with an optimizer.

- :func:`seeded_model`: a fresh network whose initialisation comes from an explicit generator
  (resumable: it does not touch the global RNG stream of the run).
- :func:`label_logits` / soft labels: learned labels are stored as logits and used as
  ``softmax(logits)``, so what a method optimises is always a probability vector, which is what the
  registry stores as ``soft_labels`` and what ``evaluate`` trains on with soft cross-entropy.
- :func:`optimizer_tensors` / :func:`load_optimizer_tensors`: any torch optimizer's per-parameter
  state (momentum buffers, Adam moments and step counts) as flat named tensors for the
  safetensors checkpoint, and back, so that a resumed run continues bit-identically.
"""

from __future__ import annotations

import torch
from torch import nn

from distilkit.data.real import RealData
from distilkit.models import create_model


def seeded_model(name: str, real: RealData, generator: torch.Generator, device: torch.device) -> nn.Module:
    """``create_model(name)`` initialised from a seed drawn from ``generator``."""
    c, h, w = real.image_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        net = create_model(name, c, real.num_classes, (h, w))
    return net.to(device)


def label_logits(labels: torch.Tensor, num_classes: int, confidence: float) -> torch.Tensor:
    """Logits whose softmax puts ``confidence`` on the hard label and the rest evenly elsewhere."""
    if not 1.0 / num_classes < confidence < 1.0:
        raise ValueError(f"label confidence must be in (1/K, 1), got {confidence}")
    gap = float(torch.log(torch.tensor(confidence * (num_classes - 1) / (1.0 - confidence))))
    return nn.functional.one_hot(labels, num_classes).float() * gap


def optimizer_tensors(optimizer: torch.optim.Optimizer, params: dict[str, torch.Tensor],
                      prefix: str = "opt") -> dict[str, torch.Tensor]:
    """The optimizer's state for the named parameters, as ``{prefix.name.key: tensor}``."""
    out = {}
    for name, param in params.items():
        for key, value in optimizer.state.get(param, {}).items():
            out[f"{prefix}.{name}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, params: dict[str, torch.Tensor],
                           tensors: dict[str, torch.Tensor], prefix: str = "opt") -> None:
    """Restore what :func:`optimizer_tensors` saved (missing entries leave the state empty)."""
    for name, param in params.items():
        head = f"{prefix}.{name}."
        state = {k[len(head):]: (v.to(param.device) if v.ndim else v).clone() for k, v in tensors.items()
                 if k.startswith(head)}
        if state:
            optimizer.state[param] = state
