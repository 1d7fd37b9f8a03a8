"""The audit registry (cleanlab Datalab's issue-manager pattern): one check per module, one contract.

An audit is ``run(dset, real, cfg, ctx) -> AuditResult`` registered with ``@register_audit`` with
its question (1, 2 or 3 of "What is Dataset Distillation Learning?"), a one-line summary and its
defaults as data: base values (the study's protocol) plus per-preset overrides, whose keys come from
the one preset vocabulary (:mod:`distilkit.presets`, checked at registration); a preset without an
entry (e.g. ``standard``, ``paper``) runs the base values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilkit.errors import ConfigError
from distilkit.presets import PRESETS, check_preset, check_preset_keys
from distilkit.registry import RegisteredSpec, Registry

# How every audit trains on the distilled set, per preset (``distilkit audit --labels/--learned-lr``
# override): the study's protocol — hard labels, the protocol's lr 0.01, never a learned lr.
TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {preset: {"labels": "hard", "learned_lr": False}
                                                 for preset in PRESETS}


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]

    def to_markdown(self) -> str:
        def cell(value: Any) -> str:
            return f"{value:.4g}" if isinstance(value, float) else str(value)

        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"title": self.title, "columns": self.columns, "rows": self.rows}


@dataclass
class AuditResult:
    """What an audit returns: scalars for the card YAML, tables and figures for its body, a verdict
    sentence in plain language, and artifact files (relative to the set folder). ``tests`` are the
    intervals and tests the verdict follows from (dicts of :mod:`distilkit.audit._stats`); ``series``
    holds the curves and distributions behind the figures (for ``distilkit compare``'s overlays)."""

    summary: dict[str, Any]
    verdict: str
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    tests: list[dict[str, Any]] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)


@dataclass
class AuditContext:
    """Services for an audit run: accelerator, seed, preset, where to write, the real-model cache."""

    accelerator: Any
    seed: int
    preset: str
    out_dir: Path  # the set's audit/ folder (files are written there under temporary names first)
    models: Any  # RealModelCache
    labels: str = "hard"  # every training on the distilled set: "hard" | "soft" (its soft labels, if any)
    learned_lr: bool = False  # ... with the set's learned lr (if it has one) instead of the protocol's

    @property
    def device(self):
        return self.accelerator.device

    def distilled_targets(self, dset) -> Any:
        """The targets every audit trains on the distilled set with (:attr:`labels`)."""
        return dset.training_targets(self.labels)

    def distilled_lr(self, dset) -> float | None:
        """The lr every audit trains on the distilled set with: its learned lr, or None (the protocol's)."""
        return dset.lr_for(self.learned_lr)


@dataclass
class AuditSpec(RegisteredSpec):
    question: int = 1
    distributed: bool = False  # run on every process (its result is used on the main one only)
    check: Callable[[dict[str, Any]], None] | None = None  # refuses a resolved config no run can use

    def resolve(self, preset: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        check_preset(preset)
        cfg = {**self.defaults, **self.presets.get(preset, {})}
        cfg = self.with_user_options(cfg, overrides or {}, [self.defaults, *self.presets.values()])
        if self.check is not None:
            self.check(cfg)
        return cfg


_AUDITS: Registry[AuditSpec] = Registry("audit", order=lambda name, spec: (spec.question, name))


def register_audit(name: str, *, question: int, summary: str, defaults: dict[str, Any],
                   presets: dict[str, dict[str, Any]] | None = None, distributed: bool = False,
                   check: Callable[[dict[str, Any]], None] | None = None):
    """Register an audit. ``distributed`` audits are called on every Accelerate process and share
    their work; the others are called on the main process only. ``check(cfg)`` raises a
    :class:`ConfigError` for a resolved config no run can use; it runs when the audit is planned, before
    any data is loaded."""
    if question not in (1, 2, 3):
        raise ConfigError(f"audit {name!r}: question must be 1, 2 or 3, got {question!r}")
    check_preset_keys(presets or {}, f"audit {name!r}")

    return _AUDITS.decorator(name, lambda fn: AuditSpec(name, summary, fn, defaults, presets or {}, question=question,
                                                        distributed=distributed, check=check))


get_audit = _AUDITS.get  # an AuditSpec by name (ConfigError for an unknown one)
list_audits = _AUDITS.names  # the registered audits, by question, then name
