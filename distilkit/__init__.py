"""distilkit: dataset distillation on the Hugging Face stack.

The public API (imported lazily, so ``distilkit --help`` stays fast)::

    from distilkit import distill, audit, load_set
    dset = distill("embedded", method="dm", ipc=10, preset="cpu")     # a DistilledSet; nothing written
    dset.save("out/"); dset.evaluate(runs=5); dset.push_to_hub("user/name")
    report = audit(dset, only=["recognition"], preset="cpu")            # an AuditReport
    dset = load_set("user/name")                                         # a folder, hf:// id or repo id

Folder-based counterparts, as the commands use them: ``evaluate_folder(folder)`` and
``run_audits(folder)`` write their results into the set's card, ``publish_set(folder, repo_id)``,
``compare_sets([a, b], out)``; :mod:`distilkit.pipeline` distills a :class:`DistillConfig` into a folder.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distilkit.api import audit, distill, load_set, publish
    from distilkit.audit._registry import list_audits, register_audit
    from distilkit.audit._report import AuditReport, run_audits
    from distilkit.compare import compare_sets
    from distilkit.config import DistillConfig
    from distilkit.data.real import RealData
    from distilkit.data.sources import SourceConfig, load_real
    from distilkit.distilled import DistilledSet
    from distilkit.errors import DistilkitError
    from distilkit.evaluate import evaluate_folder, evaluate_set
    from distilkit.hub.publish import publish_set
    from distilkit.hub.verify import verify_set
    from distilkit.methods._registry import list_methods, register_method
    from distilkit.models import create_model

_EXPORTS = {
    "distill": "distilkit.api",
    "audit": "distilkit.audit",  # the subpackage, which called is distilkit.api.audit (see distilkit/audit)
    "publish": "distilkit.api",
    "load_set": "distilkit.api",
    "AuditReport": "distilkit.audit._report",
    "DistilledSet": "distilkit.distilled",
    "RealData": "distilkit.data.real",
    "SourceConfig": "distilkit.data.sources",
    "load_real": "distilkit.data.sources",
    "DistillConfig": "distilkit.config",
    "evaluate_set": "distilkit.evaluate",
    "evaluate_folder": "distilkit.evaluate",
    "run_audits": "distilkit.audit._report",
    "publish_set": "distilkit.hub.publish",
    "verify_set": "distilkit.hub.verify",
    "compare_sets": "distilkit.compare",
    "create_model": "distilkit.models",
    "register_method": "distilkit.methods",
    "list_methods": "distilkit.methods",
    "register_audit": "distilkit.audit",
    "list_audits": "distilkit.audit",
    "DistilkitError": "distilkit.errors",
}

__all__ = [
    "AuditReport",
    "DistillConfig",
    "DistilkitError",
    "DistilledSet",
    "RealData",
    "SourceConfig",
    "audit",
    "compare_sets",
    "create_model",
    "distill",
    "evaluate_folder",
    "evaluate_set",
    "list_audits",
    "list_methods",
    "load_real",
    "load_set",
    "publish",
    "publish_set",
    "register_audit",
    "register_method",
    "run_audits",
    "verify_set",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = import_module(_EXPORTS[name])
        return module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)
    raise AttributeError(f"module 'distilkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
