"""Shared pieces of the methods that learn images, labels or a learning rate with an optimizer.

- :func:`label_logits` / soft labels: learned labels are stored as logits and used as
  ``softmax(logits)``, so what a method optimises is always a probability vector, which is what the
  registry stores as ``soft_labels`` and what ``evaluate`` trains on with soft cross-entropy.
- :func:`optimizer_tensors` / :func:`load_optimizer_tensors`: any torch optimizer's per-parameter
  state (momentum buffers, Adam moments and step counts) as flat named tensors for the
  safetensors checkpoint, and back, so that a resumed run continues bit-identically.
- :class:`MomentumImages` and :class:`LearnedTensors`: the two checkpoint layouts the learning loop
  (:mod:`distilkit.methods._loop`) saves and restores; a method with more state (a network, a
  model pool) extends one of them.
"""

from __future__ import annotations

import torch
from torch import nn

from distilkit.errors import ConfigError


def label_logits(labels: torch.Tensor, num_classes: int, confidence: float) -> torch.Tensor:
    """Logits whose softmax puts ``confidence`` on the hard label and the rest evenly elsewhere."""
    if not 1.0 / num_classes < confidence < 1.0:
        raise ConfigError(f"label_confidence must lie between 1/K = {1.0 / num_classes:.3g} and 1 for "
                          f"{num_classes} classes, got {confidence}")
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


class MomentumImages:
    """The checkpoint of a method that moves images by SGD with momentum (dm, dc/dsa, cafe):
    ``images`` and, once the optimizer has one, its momentum buffer as ``momentum``."""

    def __init__(self, images: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        self.images, self.optimizer = images, optimizer

    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"images": self.images}
        buffer = self.optimizer.state.get(self.images, {}).get("momentum_buffer")
        if buffer is not None:
            tensors["momentum"] = buffer
        return tensors

    def entries(self) -> dict:
        return {}

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        with torch.no_grad():
            self.images.copy_(tensors["images"].to(self.images.device))
        if "momentum" in tensors:
            self.optimizer.state[self.images]["momentum_buffer"] = tensors["momentum"].to(self.images.device)


class LearnedTensors:
    """The checkpoint of a method that learns named tensors (images, label logits, a learning rate;
    krr, bptt, mtt): each tensor under its name, and the state of each optimizer in ``optimizers``
    (``{prefix: (optimizer, {name: tensor it moves})}``) as :func:`optimizer_tensors` names it."""

    def __init__(self, learned: dict[str, torch.Tensor],
                 optimizers: dict[str, tuple[torch.optim.Optimizer, dict[str, torch.Tensor]]]) -> None:
        self.learned, self.optimizers = learned, optimizers

    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = dict(self.learned)
        for prefix, (optimizer, params) in self.optimizers.items():
            tensors.update(optimizer_tensors(optimizer, params, prefix=prefix))
        return tensors

    def entries(self) -> dict:
        return {}

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        with torch.no_grad():
            for name, tensor in self.learned.items():
                tensor.copy_(tensors[name].to(tensor.device))
        for prefix, (optimizer, params) in self.optimizers.items():
            load_optimizer_tensors(optimizer, params, tensors, prefix=prefix)
