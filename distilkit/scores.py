"""Fair scores (DD-Ranking's construction, validation-clean): how much of a set's accuracy is its own.

All accuracies are fractions in [0, 1] (as everywhere in distilkit's cards), each the *final* test
accuracy of one freshly trained model: no model, epoch or learning rate is selected on the test split
(DD-Ranking keeps the best test accuracy over epochs and over a learning-rate grid; we do not). The
set trains with its learned lr if it has one, else the protocol's; the random subset and the full real
data train with the protocol's lr.

Per evaluation run r (the same seeds as the plain accuracy runs):

- IOR_r = acc(set) - acc(random real subset): improvement over random. The subset has the set's
  per-class counts, drawn from the real train split (a seeded stream per run), in the set's pixel
  space, trained with the same protocol. It gets hard labels, or, when the set has soft labels, soft
  labels from the full-real model below (a teacher, as DD-Ranking relabels random data).
- HLR_r = acc(full real data) - acc(set, hard labels): hard-label recovery. The full-real model is
  trained once per (source, pixel space, model, protocol), with seed 0, and cached by
  :class:`distilkit.real_models.RealModelCache` (shared with the audits).
- LRS_r = (e^a - e^-1) / (e - e^-1), a = w * IOR_r - (1 - w) * HLR_r, w = 0.5: the label-robust score.
- ARS_r = (e^b - e^-1) / (e - e^-1), b = w * (acc_aug(set) - acc_aug(random))
  + (1 - w) * (acc_noaug(set) - acc_noaug(random)): the augmentation-robust score, from accuracies
  with (DSA on) and without (DSA off) augmentation, as DD-Ranking's ``aug_robust.py`` combines them
  (``ars_lambda`` = w = 0.5).

With accuracies as fractions, a and b lie in [-1, 1] and both scores in [0, 1]; a score of 1 needs a set
that beats random by 100 points and matches full real data. Scores are reported as mean and population
std over runs, with the component accuracies.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import torch

from distilkit.data.real import RealData
from distilkit.distilled import DistilledSet
from distilkit.seeding import generator as seed_generator
from distilkit.train import TrainConfig, train_and_test

W = 0.5
FULL_REAL_SEED = 0
SCORE_NAMES = ("ior", "hlr", "lrs", "ars")


def exp_score(x: float) -> float:
    """DD-Ranking's squashing ``(e^x - e^-1) / (e - e^-1)``: -1 -> 0, 1 -> 1."""
    return (math.exp(x) - math.exp(-1)) / (math.e - math.exp(-1))


def random_subset(real: RealData, counts: torch.Tensor, seed: int, run: int) -> torch.Tensor:
    """Train indices with ``counts[c]`` random images of class c (class-major), from a stream of its own."""
    generator = seed_generator("fair-scores-random-subset", seed, run)
    picks = []
    for c, n in enumerate(counts.tolist()):
        pool = real.class_indices(c)
        picks.append(pool[torch.randperm(pool.numel(), generator=generator)[:n]])
    return torch.cat(picks)


@dataclasses.dataclass
class FairContext:
    """What every run of one (set, model, protocol) shares: real data in the set's space, the full-real
    model and its accuracy, test data."""

    real: RealData
    test_images: torch.Tensor
    test_labels: torch.Tensor
    full_real_acc: float
    teacher: torch.nn.Module | None


def fair_context(dset: DistilledSet, real_raw: RealData, model: str, protocol: TrainConfig, cache,
                 device: torch.device | str = "cpu") -> FairContext:
    """Real data mapped into the set's pixel space and the cached full-real model (trained on a miss)."""
    real = dataclasses.replace(real_raw, pixel_space=dset.pixel_space)
    net, acc = cache.get(real, model, protocol, FULL_REAL_SEED, device=device)
    test_images, test_labels = real.test_set()
    teacher = net if dset.labels_used(protocol.labels) == "soft" else None  # soft-label runs: relabel random data
    return FairContext(real, test_images, test_labels, float(acc), teacher)


@torch.no_grad()
def teacher_labels(teacher: torch.nn.Module, images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    teacher.eval()
    return torch.softmax(teacher(images.to(device)).float(), dim=1).cpu()


def run_scores(dset: DistilledSet, ctx: FairContext, protocol: TrainConfig, model: str, run_seed: int,
               seed: int, run: int, set_acc: float, lr: float | None, device: torch.device | str = "cpu") -> dict:
    """The accuracies of one run and its IOR, HLR, LRS and ARS (``set_acc``: the plain run's accuracy)."""
    def train(images, targets, cfg, run_lr):
        return train_and_test(images, targets, ctx.test_images, ctx.test_labels, dset.num_classes, cfg,
                              seed=run_seed, model_name=model, lr=run_lr, device=device)

    counts = torch.bincount(dset.labels, minlength=dset.num_classes)
    idx = random_subset(ctx.real, counts, seed, run)
    rand_images = ctx.real.batch(idx)
    rand_targets = ctx.real.train_labels[idx] if ctx.teacher is None else \
        teacher_labels(ctx.teacher, rand_images, device)
    with_aug, without_aug = dataclasses.replace(protocol, dsa=True), dataclasses.replace(protocol, dsa=False)
    acc = {"set": set_acc, "random": train(rand_images, rand_targets, protocol, None)}
    hard_already = dset.labels_used(protocol.labels) == "hard"
    acc["set_hard"] = set_acc if hard_already else train(dset.images, dset.labels, protocol, lr)
    for name, cfg in (("aug", with_aug), ("noaug", without_aug)):
        same = cfg.dsa == protocol.dsa
        acc[f"set_{name}"] = set_acc if same else train(dset.images, dset.training_targets(protocol.labels), cfg, lr)
        acc[f"random_{name}"] = acc["random"] if same else train(rand_images, rand_targets, cfg, None)
    ior = acc["set"] - acc["random"]
    hlr = ctx.full_real_acc - acc["set_hard"]
    beta = W * (acc["set_aug"] - acc["random_aug"]) + (1 - W) * (acc["set_noaug"] - acc["random_noaug"])
    return {"accuracies": acc, "ior": ior, "hlr": hlr, "lrs": exp_score(W * ior - (1 - W) * hlr),
            "ars": exp_score(beta)}


def summarise(per_run: list[dict], ctx: FairContext, protocol: TrainConfig) -> dict:
    """Mean and std of each score over runs, the mean component accuracies, and how they were made."""
    out: dict = {"w": W, "accuracy_unit": "fraction"}
    for name in SCORE_NAMES:
        values = [r[name] for r in per_run]
        out[name] = {"mean": round(statistics.fmean(values), 6), "std": round(statistics.pstdev(values), 6),
                     "values": [round(v, 6) for v in values]}
    keys = per_run[0]["accuracies"].keys()
    out["accuracies"] = {k: round(statistics.fmean(r["accuracies"][k] for r in per_run), 6) for k in keys}
    out["accuracies"]["full_real"] = round(ctx.full_real_acc, 6)
    out["full_real"] = {"seed": FULL_REAL_SEED, "protocol": protocol.to_dict(), "cache": "RealModelCache"}
    out["random_labels"] = "hard" if ctx.teacher is None else "soft (full-real model's softmax)"
    out["selection"] = "none: final-epoch test accuracy, fixed lr"
    return out
