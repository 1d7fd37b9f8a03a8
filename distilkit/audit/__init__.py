"""Audits of distilled sets: the three analyses of "What is Dataset Distillation Learning?".

Each audit is one module registered by name (``distilkit audits`` lists them); ``report`` runs them
and writes the results into the set's folder and card.

Called, this package is the Python API's :func:`distilkit.api.audit` (``from distilkit import audit;
report = audit(dset, only=["recognition"])``): Python binds an imported subpackage as an attribute of
its parent, so ``distilkit.audit`` cannot name the function alone without breaking the package's dotted
name; a callable package serves both.
"""

import sys
import types

from distilkit.audit import (  # noqa: F401  (registration)
    agreement,
    curvature,
    early_recognition,
    influence,
    mixing,
    pixels,
    recognition,
    sensitivity,
)
from distilkit.audit._registry import AuditContext, AuditResult, Table, get_audit, list_audits, register_audit

__all__ = ["AuditContext", "AuditResult", "Table", "get_audit", "list_audits", "register_audit"]


class _AuditPackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from distilkit.api import audit

        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _AuditPackage
