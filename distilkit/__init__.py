"""distilkit: dataset distillation on the Hugging Face stack.

The small public API (imported lazily, so ``distilkit --help`` stays fast)::

    from distilkit import DistillConfig, distill, evaluate_folder, DistilledSet
    out = distill(DistillConfig(method="dm", ipc=10, preset="cpu"))
    results = evaluate_folder(out, runs=5)
    dset = DistilledSet.load(out)
    run_audits(out, only=["recognition"])          # writes audit/report.json and the card section
    publish_set(out, "user/fmnist-dm-ipc10")        # needs a Hugging Face token
    compare_sets([out, other], "comparison")        # the study's overlays across sets of one source
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "DistillConfig": "distilkit.config",
    "SourceConfig": "distilkit.data.sources",
    "load_real": "distilkit.data.sources",
    "RealData": "distilkit.data.real",
    "DistilledSet": "distilkit.distilled",
    "distill": "distilkit.pipeline",
    "evaluate_set": "distilkit.evaluate",
    "evaluate_folder": "distilkit.evaluate",
    "publish_set": "distilkit.hub.publish",
    "verify_set": "distilkit.hub.verify",
    "run_audits": "distilkit.audit.report",
    "compare_sets": "distilkit.compare",
    "create_model": "distilkit.models",
    "register_method": "distilkit.methods",
    "list_methods": "distilkit.methods",
    "DistilkitError": "distilkit.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'distilkit' has no attribute {name!r}")
