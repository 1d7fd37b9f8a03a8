"""Named seed streams: independent models never share an initialisation (issue 20, defect 1)."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter

import pytest
import torch

from distilkit.seeding import ModelShape, derive_seed, generator, seeded_model


def test_derive_seed_is_stable_63_bit_and_separates_purposes_and_indices():
    a = derive_seed("early-stopped", 0, 0)
    assert a == derive_seed("early-stopped", 0, 0) and 0 <= a < 2**63
    others = {derive_seed("distilled-model", 0), derive_seed("subset-model", 0, 0), derive_seed("early-stopped", 0, 1),
              derive_seed("early-stopped", 1, 0), derive_seed("early-stopped", 0, "0", "x")}
    assert a not in others and len(others) == 5
    assert torch.equal(torch.rand(3, generator=generator("x", 5)), torch.rand(3, generator=generator("x", 5)))
    state = torch.random.get_rng_state()
    first = seeded_model("convnet-w8-d2", ModelShape((1, 8, 8), 3), derive_seed("x", 5))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    again = seeded_model("convnet-w8-d2", ModelShape((1, 8, 8), 3), derive_seed("x", 5))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True))
    with pytest.raises(ValueError):
        derive_seed("a|b", 0)


def _record_initial_weights(monkeypatch) -> list[str]:
    """Patch SGD and Adam so that every optimiser records a hash of its parameters when it is made:
    every training in the audits starts by making one, from the model's initial weights."""
    seen: list[str] = []
    for cls in (torch.optim.SGD, torch.optim.Adam):
        original = cls.__init__

        def init(self, params, *args, _original=original, **kwargs):
            params = list(params)
            digest = hashlib.sha256()
            for p in params:
                digest.update(p.detach().cpu().numpy().tobytes())
            seen.append(digest.hexdigest())
            _original(self, params, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", init)
    return seen


def test_no_two_independent_models_of_an_audit_run_share_an_initialisation(smoke_set, accelerator, tmp_path,
                                                                             monkeypatch):
    """One smoke audit run of every training audit, the initial weights of every model it trains recorded.

    The protocol's independent models must start from distinct weights: the distilled-trained model,
    each early-stopped run and each subset model (agreement); the leave-one-out models' shared init
    and the coherence model (influence); different seeds of mixing and sensitivity; and the models
    of different audits. Models the protocol deliberately pairs (the N + 1 leave-one-out models, the
    arms and k's of one mixing seed, the sets and setups of one sensitivity seed — a BatchNorm
    ConvNet's parameters have the instance-norm one's shapes and draws) may share one.
    """
    from distilkit.audit._report import run_audits
    from distilkit.real_models import RealModelCache

    folder = tmp_path / "set"
    shutil.copytree(smoke_set, folder)
    cache = RealModelCache(root=tmp_path / "models")
    seen = _record_initial_weights(monkeypatch)
    overrides = {"mixing": {"seeds": 2, "ks": [0]}, "agreement": {"test_subsample": 60},
                 "early-recognition": {"test_subsample": 60}, "sensitivity": {"seeds": 2, "minibatch": 8}}
    inits: dict[str, Counter] = {}
    for name in ("agreement", "curvature", "early-recognition", "influence", "mixing", "sensitivity", "recognition"):
        start = len(seen)
        run_audits(folder, only=[name], preset="smoke", accelerator=accelerator, cache=cache, overrides=overrides)
        inits[name] = Counter(seen[start:])

    from distilkit.audit import get_audit

    agreement = inits["agreement"]  # the distilled-trained models + 2 early-stopped runs + 3 subset models
    expected = int(get_audit("agreement").resolve("smoke", overrides["agreement"])["distilled_seeds"]) + 2 + 3
    assert sum(agreement.values()) == expected and len(agreement) == expected
    assert len(inits["curvature"]) == 1 and len(inits["early-recognition"]) == 1
    loo_init, loo_count = inits["influence"].most_common(1)[0]
    assert loo_count >= 2  # the N + 1 leave-one-out models, the baseline's and TracIn's run share one init
    loo_inits = int(get_audit("influence").resolve("smoke")["inits"])  # the noise floor's further inits
    assert len(inits["influence"]) == loo_inits + 1  # ... each its own, and the coherence model has its own
    assert len(inits["mixing"]) == 2  # one per seed, shared by both arms and every k of that seed
    assert len(inits["sensitivity"]) == 2  # one per seed, shared by both sets and every setup of that seed
    assert sum(inits["recognition"].values()) == 0  # its panel model is influence's coherence model, cached
    assert cache.hits >= 1
    every = [h for counter in inits.values() for h in counter]
    assert len(every) == len(set(every)), "two audits started models from the same weights"
