"""Audits of distilled sets: the three analyses of "What is Dataset Distillation Learning?".

Each audit is one module registered by name (``distilkit audits`` lists them); ``report`` runs them
and writes the results into the set's folder and card.
"""

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
from distilkit.audit.registry import AuditContext, AuditResult, Table, get_audit, list_audits, register_audit

__all__ = ["AuditContext", "AuditResult", "Table", "get_audit", "list_audits", "register_audit"]
