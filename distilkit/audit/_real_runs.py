"""Training runs the Q2 audits share: the study's protocols, seeded models, and cached model pools.

The study trains "on distilled" with SGD lr 0.01, momentum 0.9, no weight decay, full batch, 300
iterations, no augmentation, and "on real" with the same optimizer at batch 256. Two pools of
real-data models are compared with the distilled-trained model; their test predictions depend
only on the real data, the protocol and the seed, so they are built once and cached (see
:func:`~distilkit.real_models.cached_tensors`) and shared by every set and audit that asks
for the same pool.
"""

from __future__ import annotations

import torch
from torch import nn

from distilkit import seeding
from distilkit.audit._common import share
from distilkit.data.real import RealData
from distilkit.distilled import DistilledSet
from distilkit.errors import ConfigError
from distilkit.real_models import RealModelCache, cached_tensors
from distilkit.seeding import derive_seed
from distilkit.seeding import generator as seed_generator
from distilkit.train import TrainConfig, train_model, training_steps

STUDY_REAL = {"batch_size": 256, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "dsa": False,
              "lr_schedule": "constant", "use_learned_lr": False}
STUDY_DISTILLED = {**STUDY_REAL, "iterations": 300, "batch_size": None}


def seeded_model(name: str, real: RealData, seed: int, purpose: str = "audit-model", *index: int | str) -> nn.Module:
    """:func:`distilkit.seeding.seeded_model` for ``real``, initialised from member ``index`` of seed
    stream ``purpose`` under ``seed``."""
    return seeding.seeded_model(name, real, derive_seed(purpose, seed, *index, "init"))


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
            batch_size: int = 1000) -> torch.Tensor:
    """Argmax class of every image (int64 on the CPU), in eval mode."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, images.shape[0], batch_size)])


def parse_iterations(spec: str | list[int] | int) -> list[int]:
    """``[0, 10, 50]``, ``25`` (just that one) or ``"start:stop:step"`` (Python range) -> sorted iterations."""
    if isinstance(spec, int):
        values = [spec]
    elif isinstance(spec, str):
        try:
            parts = [int(p) for p in spec.split(":")]
        except ValueError:
            parts = []
        if len(parts) not in (2, 3):
            raise ConfigError(f"iterations: expected 'start:stop[:step]', got {spec!r}")
        values = list(range(*parts))
    else:
        values = [int(v) for v in spec]
    if not values or min(values) < 0:
        raise ConfigError(f"iterations: need non-negative iterations, got {spec!r}")
    return sorted(set(values))


def balanced_subsample(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``per_class`` random items of every class (all of a smaller class), seeded."""
    keys = torch.rand(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    order = torch.argsort(labels.double() * 2 + keys.double())  # by class, random within a class
    counts = torch.bincount(labels)
    position = torch.arange(labels.shape[0]) - (torch.cumsum(counts, 0) - counts)[labels[order]]
    return torch.sort(order[position < per_class]).values


def test_split(real: RealData, subsample: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The real test split, or a seeded class-balanced subsample of about ``subsample`` images of it."""
    images, labels = real.test_set()
    if subsample is None or subsample >= labels.shape[0]:
        return images, labels
    keep = balanced_subsample(labels, max(1, subsample // real.num_classes), derive_seed("test-subsample", seed))
    return images[keep], labels[keep]


def train_on_distilled(dset: DistilledSet, real: RealData, model_name: str, protocol: TrainConfig, seed: int,
                       device: torch.device | str = "cpu", labels: str = "hard", learned_lr: bool = False,
                       index: int = 0) -> nn.Module:
    """A fresh model trained on the distilled set with its ``labels`` ("hard", or "soft" if it has
    them) and, with ``learned_lr``, its learned lr (else the protocol's; the audit-wide options of
    :class:`~distilkit.audit._registry.AuditContext` decide, not ``protocol.use_learned_lr``). Its
    initialisation and data order come from member ``index`` of the ``distilled-model`` streams."""
    model = seeded_model(model_name, real, seed, "distilled-model", index)
    lr = dset.lr_for(learned_lr)
    return train_model(model, dset.images, dset.training_targets(labels), protocol,
                       seed_generator("distilled-model", seed, index, "order"), lr=lr, device=device)


def subset_pool(real: RealData, cache: RealModelCache, model_name: str, protocol: TrainConfig, size: int,
                fractions: tuple[float, float], seed: int, test_subsample: int | None = None,
                device: torch.device | str = "cpu", accelerator=None) -> dict[str, torch.Tensor]:
    """``size`` models, each trained on a random class-balanced real subset; their test predictions.

    Subset sizes are evenly spaced over ``fractions`` (of the train split), at least one image per
    class and at most the smallest class. Returns {"predictions" [size, n_test] int16, "accuracy"
    [size], "per_class" [size] (images per class)}, predictions on :func:`test_split`. Under
    Accelerate the models are split across the processes and gathered; the main process caches.
    """
    lo, hi = fractions
    spec = {"model": model_name, "protocol": protocol.to_dict(), "size": size, "fractions": [lo, hi],
            "test_subsample": test_subsample}

    def build() -> dict[str, torch.Tensor]:
        n, k = real.train_labels.shape[0], real.num_classes
        smallest = int(real.class_counts.min())
        per_class = [min(smallest, max(1, round(f * n / k))) for f in torch.linspace(lo, hi, size).tolist()]
        test_images, test_labels = test_split(real, test_subsample, seed)

        def one(m: int) -> torch.Tensor:
            pick = real.sample_per_class(per_class[m], seed_generator("subset-model", seed, m, "subset")).reshape(-1)
            model = seeded_model(model_name, real, seed, "subset-model", m)
            train_model(model, real.batch(pick), real.train_labels[pick], protocol,
                        seed_generator("subset-model", seed, m, "order"), device=device)
            return predict(model, test_images, device).to(torch.int16)

        predictions = torch.stack(share(accelerator, range(size), one, "subset pool"))
        return {"predictions": predictions, "accuracy": (predictions == test_labels).float().mean(1),
                "per_class": torch.tensor(per_class)}

    return cached_tensors(cache, real, "subset-pool", spec, seed, build, write=_is_main(accelerator))


def early_pool(real: RealData, cache: RealModelCache, model_name: str, protocol: TrainConfig, runs: int,
               iterations: int, seed: int, test_subsample: int | None = None, device: torch.device | str = "cpu",
               accelerator=None) -> dict[str, torch.Tensor]:
    """``runs`` training runs on the whole real train split with test predictions after every
    iteration 0..``iterations``: {"predictions" [runs, iterations + 1, n_test] int16, "accuracy"
    [runs, iterations + 1]}, predictions on :func:`test_split`. Runs are split across processes."""
    spec = {"model": model_name, "protocol": protocol.to_dict(), "runs": runs, "iterations": iterations,
            "test_subsample": test_subsample}

    def build() -> dict[str, torch.Tensor]:
        images = real.batch(torch.arange(real.train_labels.shape[0]))
        test_images, test_labels = test_split(real, test_subsample, seed)

        def one(r: int) -> torch.Tensor:
            model = seeded_model(model_name, real, seed, "early-stopped", r)
            generator = seed_generator("early-stopped", seed, r, "order")
            run = torch.empty(iterations + 1, test_labels.shape[0], dtype=torch.int16)
            for t in training_steps(model, images, real.train_labels, protocol, generator, device=device,
                                    steps=iterations):
                run[t] = predict(model, test_images, device).to(torch.int16)
            return run

        predictions = torch.stack(share(accelerator, range(runs), one, "early-stopped pool"))
        return {"predictions": predictions, "accuracy": (predictions == test_labels).float().mean(2)}

    return cached_tensors(cache, real, "early-pool", spec, seed, build, write=_is_main(accelerator))


def _is_main(accelerator) -> bool:
    """Whether this process writes the cache; first every process waits until earlier writes are done,
    so that all of them see the same cache state (a pool built by some ranks only would hang)."""
    if accelerator is not None and accelerator.num_processes > 1:
        accelerator.wait_for_everyone()
    return accelerator is None or accelerator.is_main_process
