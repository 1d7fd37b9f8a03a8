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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch

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


@contextmanager
def seeded(purpose: str, seed: int, *index: int | str) -> Iterator[None]:
    """Run the block (e.g. a model's construction) under torch's global RNG seeded from the stream
    member, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(purpose, seed, *index))
        yield
