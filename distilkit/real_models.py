"""Models trained on the real data, once per (source, model, protocol, seed), and cached: the audits'
real references, compare's shared trajectory and evaluate's full-real accuracy (``--scores``) use them,
so this module sits beside the cache, not inside the audit package.

Files: ``<cache>/models/<key>.safetensors`` (the state dict) with the model name, protocol and real
test accuracy in the safetensors metadata. ``key`` hashes the source description, a content hash
of the train split, the pixel space, the model name, the protocol, the seed and the seed-stream
version (:data:`distilkit.seeding.STREAM_VERSION`), so a cached model is reused by every audit and
run that asks for the same thing and never by one that does not. A model's initialisation and data
order come from the ``real-model`` seed streams of (seed, model name).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distilkit.cache import cache_dir
from distilkit.data.real import RealData
from distilkit.outputs import atomic_path, write_atomic
from distilkit.seeding import STREAM_VERSION, derive_seed, seeded_model
from distilkit.seeding import generator as seed_generator
from distilkit.train import TrainConfig, accuracy, train_model


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Features before the classifier: ``embed`` for ConvNets, timm's pre-logits otherwise."""
    if hasattr(model, "embed"):
        return model.embed(x)
    return model.forward_head(model.forward_features(x), pre_logits=True).flatten(1)


@dataclass
class RealModelCache:
    """Train-or-load real-data models; counts hits and misses (reported in audit/report.json)."""

    root: Path = field(default_factory=lambda: cache_dir() / "models")
    hits: int = 0
    misses: int = 0
    _fingerprints: dict = field(default_factory=dict)

    def get(self, real: RealData, model_name: str, protocol: TrainConfig, seed: int,
            device: torch.device | str = "cpu") -> tuple[nn.Module, float]:
        """A model trained on the whole real train split, and its real test accuracy."""
        fp = self._fingerprints.setdefault(id(real), real.fingerprint())
        key = hashlib.sha256(json.dumps({"real": fp, "model": model_name, "protocol": protocol.to_dict(),
                                         "seed": seed, "seed_streams": STREAM_VERSION},
                                        sort_keys=True).encode()).hexdigest()[:32]
        path = self.root / f"{key}.safetensors"
        model = seeded_model(model_name, real, derive_seed("real-model", seed, model_name, "init"))
        if path.is_file():
            self.hits += 1
            model.load_state_dict(load_file(str(path)))
            meta = json.loads(_metadata(path)["distilkit"])
            return model.to(device).eval(), float(meta["test_accuracy"])
        self.misses += 1
        images = real.batch(torch.arange(real.train_images.shape[0]))
        train_model(model, images, real.train_labels, protocol, seed_generator("real-model", seed, model_name, "order"),
                    device=device)
        test_images, test_labels = real.test_set()
        test_acc = accuracy(model, test_images, test_labels, device=device)
        self.root.mkdir(parents=True, exist_ok=True)
        meta = {"model": model_name, "protocol": protocol.to_dict(), "seed": seed, "test_accuracy": test_acc,
                "source": real.info.get("id")}
        with atomic_path(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp),
                      metadata={"distilkit": json.dumps(meta)})
        return model.eval(), test_acc


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def cached_tensors(cache: RealModelCache, real: RealData, kind: str, spec: dict, seed: int,
                   build: Callable[[], dict[str, torch.Tensor]], write: bool = True) -> dict[str, torch.Tensor]:
    """Tensors derived from real data (e.g. a pool's test predictions), built once and cached
    (``write=False``: build without caching, e.g. on a non-main process).

    The key hashes the real data, ``kind``, ``spec`` (everything the build depends on) and ``seed``;
    files go to ``<cache>/pools/<kind>-<key>.safetensors``. Hits and misses count in ``cache``.
    """
    fp = cache._fingerprints.setdefault(id(real), real.fingerprint())
    key = hashlib.sha256(json.dumps({"real": fp, "kind": kind, "spec": spec, "seed": seed,
                                     "seed_streams": STREAM_VERSION}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:32]
    path = cache.root.parent / "pools" / f"{kind}-{key}.safetensors"
    if path.is_file():
        cache.hits += 1
        return load_file(str(path))
    cache.misses += 1
    tensors = build()
    if not write:
        return tensors
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={
        "distilkit": json.dumps({"kind": kind, "spec": spec, "seed": seed}, default=str)}))
    return tensors
