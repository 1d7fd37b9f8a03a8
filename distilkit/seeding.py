"""Named seed streams: every model initialisation and data order in ``evaluate`` and the audits
draws its seed from a stream named by what it is for.

``derive_seed(purpose, seed, *index)`` hashes a canonical string of its arguments with SHA-256 and
keeps 63 bits, so distinct (purpose, seed, index) tuples give seeds that are, for all practical
purposes, independent (two of them collide with probability ~2**-63), while the same tuple always
gives the same seed on every machine and process. Arithmetic schemes (``seed * 100_003 + i``,
``seed + 7919``) make streams of different purposes overlap: at seed 0 a distilled-trained model,
early-stopped run 0 and subset model 0 started from the same weights.

Purposes used by distilkit (a purpose names one kind of independent draw; ``index`` numbers its
members): ``evaluate`` (run r of architecture a), ``distilled-model``, ``early-stopped`` (run r),
``subset-model`` (model m), ``curvature-run``, ``early-recognition-run``, ``loo`` (the
leave-one-out models' shared initialisation), ``real-model`` (cached real-trained classifiers,
e.g. the recognition panel and influence's coherence model, per architecture), ``mixing`` (seed s),
``sensitivity`` (seed s), plus the data draws (``test-subsample``, ``mixing-draw``, ...). Where
the protocol pairs runs on purpose — in ``mixing`` the distilled and random arms and every k of
one seed, in ``sensitivity`` both sets and every setup of one seed — they share one stream member
(common random numbers); members of different seeds never do.

:data:`STREAM_VERSION` enters every derivation and the keys of cached real models and pools, so a
change of scheme never reuses a cache built under another.

Every model distilkit initialises -- in the methods, the experts, ``evaluate`` and the audits -- is
made by :func:`seeded_model`, the one place that seeds torch's global RNG (and forks it first).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from distilkit.models import create_model

if TYPE_CHECKING:
    from distilkit.data.real import RealData

STREAM_VERSION = 1
_MASK = (1 << 63) - 1


def derive_seed(purpose: str, seed: int, *index: int | str) -> int:
    """A 63-bit seed for member ``index`` of stream ``purpose`` under the user's ``seed``.

    ``sha256("distilkit-seed/v<STREAM_VERSION>|purpose|seed|i1|i2...")``, first 8 bytes, top bit
    cleared (a valid ``torch.manual_seed``/``Generator.manual_seed`` value). ``purpose`` must not
    contain ``|``.
    """
    if not purpose or "|" in purpose:
        raise ValueError(f"seed stream purpose must be a non-empty name without '|', got {purpose!r}")
    text = "|".join([f"distilkit-seed/v{STREAM_VERSION}", purpose, str(int(seed)), *(str(i) for i in index)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & _MASK


def generator(purpose: str, seed: int, *index: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from the stream member (data orders, subsets, augmentation)."""
    return torch.Generator().manual_seed(derive_seed(purpose, seed, *index))


@dataclass(frozen=True)
class ModelShape:
    """What a classifier is built for when no :class:`RealData` is at hand: the image shape
    ``(C, H, W)`` and the number of classes (the two things :func:`seeded_model` reads)."""

    image_shape: tuple[int, int, int]
    num_classes: int


def seeded_model(name: str, real: RealData | ModelShape, seed: int | torch.Generator | None,
                 device: torch.device | str | None = None) -> nn.Module:
    """``create_model(name)`` for ``real``'s images and classes, its initialisation drawn from ``seed``.

    Every model distilkit initialises is made here, under a fork of torch's global CPU RNG, so the
    caller's random stream never moves (a resumed run or an audit draws exactly what an
    uninterrupted one does). ``seed`` is an int (e.g. :func:`derive_seed` of a named stream), a
    ``torch.Generator`` (one 62-bit seed is drawn from it: the methods' per-iteration generators),
    or ``None`` when only the architecture matters (its parameter names and shapes). The model is
    moved to ``device`` when one is given.
    """
    with torch.random.fork_rng(devices=[]):
        if isinstance(seed, torch.Generator):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=seed)))
        elif seed is not None:
            torch.manual_seed(seed)
        c, h, w = real.image_shape
        model = create_model(name, c, real.num_classes, (h, w))
    return model if device is None else model.to(device)
