"""The one training/evaluation loop: train a fresh model on a tensor set, test it on real data.

Used by ``distilkit evaluate`` and by methods and audits that need trained networks. Protocols are
data (:data:`TRAIN_PRESETS`): ``standard`` (the literature's evaluation), ``paper`` (the study's
300 full-batch iterations), ``cpu`` (the same shape, sized for two CPU cores), ``smoke`` (tests).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distilkit.data.dsa import DEFAULT_STRATEGY, DSA
from distilkit.errors import ConfigError
from distilkit.presets import check_preset, check_preset_keys
from distilkit.seeding import ModelShape, derive_seed, seeded_model
from distilkit.seeding import generator as seed_generator


@dataclass
class TrainConfig:
    """A training protocol. ``iterations`` (if set) wins over ``epochs``; ``batch_size=None`` = full batch."""

    model: str = "convnet"
    epochs: int = 300
    iterations: int | None = None
    batch_size: int | None = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "step_half"  # "step_half" (x0.1 at half) or "constant"
    dsa: bool = True
    dsa_strategy: str = DEFAULT_STRATEGY
    use_learned_lr: bool = True  # train on a distilled set's learned lr when it has one
    labels: str = "soft"  # "soft": a distilled set's soft labels when it has them; "hard": its hard labels

    def steps_for(self, n: int) -> int:
        if self.iterations is not None:
            return self.iterations
        batch = n if self.batch_size is None else min(self.batch_size, n)
        return self.epochs * math.ceil(n / batch)

    def to_dict(self) -> dict:
        return asdict(self)


TRAIN_PRESETS: dict[str, TrainConfig] = {
    "standard": TrainConfig(model="convnet", epochs=1000, dsa=True),
    # the study's "train on distilled" protocol exactly: SGD lr 0.01, momentum 0.9, no weight decay, constant
    # lr, full batch, 300 iterations, no augmentation, hard labels, no learned lr (REFERENCE.md §1)
    "paper": TrainConfig(model="convnet", iterations=300, batch_size=None, lr=0.01, momentum=0.9, weight_decay=0.0,
                         lr_schedule="constant", dsa=False, use_learned_lr=False, labels="hard"),
    "cpu": TrainConfig(model="convnet-w32", epochs=300, dsa=True),
    "smoke": TrainConfig(model="convnet-w8-d2", epochs=20, dsa=True),
}
check_preset_keys(TRAIN_PRESETS, "evaluation protocols")  # one protocol per preset (tests check all are there)


LABEL_CHOICES = ("hard", "soft")


def train_preset(name: str, **overrides) -> TrainConfig:
    """The evaluation protocol of preset ``name`` with the non-None ``overrides`` applied."""
    check_preset(name)
    if overrides.get("labels") not in (None, *LABEL_CHOICES):
        raise ConfigError(f"labels must be one of {', '.join(LABEL_CHOICES)}, got {overrides['labels']!r}")
    return dataclasses.replace(TRAIN_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for hard (long) or soft (float [N, K] probabilities) targets."""
    if targets.dtype == torch.long:
        return F.cross_entropy(logits, targets)
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def training_steps(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    lr: float | None = None,
    device: torch.device | str = "cpu",
    optimizer: str = "sgd",
    steps: int | None = None,
) -> Iterator[int]:
    """Train ``model`` in place on (images, targets), yielding the number of steps taken so far.

    Yields 0 before the first step and ``t`` after step ``t``, so a caller can look at the model
    along the trajectory (the audits record predictions and curvature this way). ``steps``
    overrides the protocol's length. Batches and DSA come from ``generator``. ``optimizer``: "sgd"
    (momentum and weight decay from ``cfg``) or "adam" (weight decay from ``cfg``).
    """
    n = images.shape[0]
    steps = cfg.steps_for(n) if steps is None else steps
    batch = n if cfg.batch_size is None else min(cfg.batch_size, n)
    lr = cfg.lr if lr is None else lr
    model.to(device)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    dsa = DSA(cfg.dsa_strategy) if cfg.dsa else None
    images, targets = images.to(device), targets.to(device)
    # Minibatches walk one permutation per epoch, tail included (a DataLoader with shuffle=True and
    # drop_last=False, as the reference evaluation loops): every image is seen once per epoch.
    order, cursor = torch.randperm(n, generator=generator), 0
    yield 0
    for step in range(steps):
        model.train()  # a caller may have switched to eval mode to look at the model in between
        if cfg.lr_schedule == "step_half" and step == steps // 2 and steps > 1:
            for group in opt.param_groups:
                group["lr"] = lr * 0.1
        if batch == n:
            x, y = images, targets
        else:
            if cursor >= n:
                order, cursor = torch.randperm(n, generator=generator), 0
            idx = order[cursor : cursor + batch].to(device)
            cursor += batch
            x, y = images[idx], targets[idx]
        if dsa is not None:
            x = dsa(x, dsa.sample(x.shape[0], generator, one_op=True))
        loss = soft_cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        yield step + 1


def train_model(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    lr: float | None = None,
    device: torch.device | str = "cpu",
    optimizer: str = "sgd",
) -> nn.Module:
    """Train ``model`` in place on (images, targets) for the protocol's length (see :func:`training_steps`)."""
    for _ in training_steps(model, images, targets, cfg, generator, lr=lr, device=device, optimizer=optimizer):
        pass
    return model


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             device: torch.device | str = "cpu") -> float:
    model.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = model(images[start : start + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == labels[start : start + batch_size]).sum().item()
    return correct / max(1, images.shape[0])


def train_and_test(
    images: torch.Tensor,
    targets: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    cfg: TrainConfig,
    seed: int,
    model_name: str | None = None,
    lr: float | None = None,
    device: torch.device | str = "cpu",
    optimizer: str = "sgd",
) -> float:
    """One evaluation run: fresh model, train, return test accuracy. ``seed`` is the run's seed (a
    member of a named stream, see :mod:`distilkit.seeding`); the initialisation and the data order
    come from two independent streams derived from it."""
    model = seeded_model(model_name or cfg.model, ModelShape(tuple(images.shape[1:]), num_classes),
                         derive_seed("model-init", seed))
    generator = seed_generator("data-order", seed)
    train_model(model, images, targets, cfg, generator, lr=lr, device=device, optimizer=optimizer)
    return accuracy(model, test_images, test_labels, device=device)
