"""Run audits on a distilled set: an in-memory :class:`AuditReport`, saved as ``audit/report.json``,
figures, and the card.

Three steps: :func:`plan_audits` (names, options and presets checked before any work),
:func:`run_planned` (run them on a set and its real data; figures and artifacts are kept in memory)
and :meth:`AuditReport.save` (merge into a set folder). :func:`run_audits` is the three on a folder.

``audit/report.json`` = {"distilkit_version", "created", "set", "source", "audits": {NAME: {"question",
"preset", "seed", "config", "summary", "verdict", "tests", "series", "tables", "figures", "artifacts",
"date", "seconds"}}}: ``tests`` are the intervals and tests the verdict follows from (see
:mod:`distilkit.audit._stats`), ``series`` the curves behind the figures. The card gets the summaries
(and each test's estimate, interval or p-value and outcome) under ``distilkit.audits`` and a human
section between the audit markers.
Re-running replaces only the audits it re-ran, keeps the others, and writes every file atomically.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilkit import jsonio
from distilkit.audit._registry import TRAINING_DEFAULTS, AuditContext, AuditSpec, Table, get_audit, list_audits
from distilkit.card import read_card, replace_section
from distilkit.data.real import RealData
from distilkit.distilled import DistilledSet
from distilkit.errors import DistilkitError
from distilkit.evaluate import real_for_set
from distilkit.outputs import FolderLock, check_output_folder, is_distilkit_set, lock_path, lock_timeout, write_atomic
from distilkit.presets import check_preset
from distilkit.real_models import RealModelCache
from distilkit.runtime import distilkit_version, make_accelerator

REPORT_FILE = "audit/report.json"
QUESTIONS = {
    1: "Q1 — Can distilled data substitute for real data?",
    2: "Q2 — What information does distilled data capture?",
    3: "Q3 — Do single distilled points carry semantic information?",
}


def load_report(folder: Path) -> dict:
    path = folder / REPORT_FILE
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DistilkitError(f"{path} is corrupt ({err.msg}); remove it to start the audit report afresh") from err
    if not isinstance(report, dict) or not isinstance(report.get("audits", {}), dict):
        raise DistilkitError(f"{path} is not a distilkit audit report; remove it to start afresh")
    return report


def card_audit_entries(report: dict) -> dict:
    """What the card's ``distilkit.audits`` holds per audit: question, preset, date, summary and its tests."""
    return jsonio.finite({name: {"question": a["question"], "preset": a["preset"], "date": a["date"],
                                 **{k: a[k] for k in ("labels", "learned_lr") if k in a},
                                 "summary": a["summary"], **_card_tests(a.get("tests"))}
                          for name, a in report.get("audits", {}).items()})


def tests_table(tests: list[dict]) -> Table:
    """The intervals and tests behind a verdict, one row each."""
    rows = []
    for t in tests:
        if t.get("ci") is not None:
            evidence = f"95% CI [{t['ci'][0]:+.4f}, {t['ci'][1]:+.4f}]"
        else:
            evidence = f"p = {t['p']:.3g}" + (f", effect {t['effect']:+.2f}" if t.get("effect") is not None else "")
        estimate = f"{t['estimate']:+.4f}" if isinstance(t.get("estimate"), (int, float)) else "-"
        rows.append([t["claim"], t["statistic"], estimate, evidence, t["n"], t["method"], t["outcome"]])
    return Table("Intervals and tests behind the verdict",
                 ["claim", "statistic", "estimate", "interval / test", "n", "method", "outcome"], rows)


def audit_markdown(report: dict) -> str:
    """The card section: per question a plain-language verdict, then each audit's tables and figures."""
    audits = report.get("audits", {})
    if not audits:
        return "No audits yet: run `distilkit audit <this set>`."
    parts = ["Analyses of *What is Dataset Distillation Learning?* (Yang et al., ICML 2024), run by "
             f"distilkit {report.get('distilkit_version')}; machine-readable results in `{REPORT_FILE}`."]
    for question, title in QUESTIONS.items():
        names = sorted(n for n, a in audits.items() if a.get("question") == question)
        if not names:
            continue
        parts.append(f"### {title}")
        parts.append("**Verdict.** " + " ".join(audits[n]["verdict"] for n in names))
        for name in names:
            entry = audits[name]
            training = (f", {entry['labels']} labels, {'learned' if entry.get('learned_lr') else 'protocol'} lr"
                        if "labels" in entry else "")
            parts.append(f"#### `{name}` ({entry['preset']} preset, seed {entry['seed']}{training}, {entry['date']})")
            if entry.get("tests"):
                parts.append(tests_table(entry["tests"]).to_markdown())
            parts += [Table(**t).to_markdown() for t in entry.get("tables", [])]
            parts += [f"![{name}]({fig})" for fig in entry.get("figures", [])]
    return "\n\n".join(parts)


def _card_tests(tests: list[dict] | None) -> dict:
    """The tests as they go into the card YAML: claim, estimate, interval or p-value, outcome."""
    if not tests:
        return {}
    keep = ("claim", "estimate", "ci", "p", "n", "outcome")
    return {"tests": [{k: t[k] for k in keep if t.get(k) is not None} for t in tests]}


@dataclass
class AuditPlan:
    """Which audits to run, in order, with their resolved options, and how every audit trains on the
    distilled set (``labels``: "hard" | "soft"; ``learned_lr``: with the set's learned lr)."""

    specs: list[AuditSpec]
    configs: dict[str, dict[str, Any]]
    preset: str
    seed: int
    labels: str
    learned_lr: bool


def plan_audits(only: list[str] | None = None, preset: str = "cpu", seed: int = 0,
                overrides: dict[str, dict] | None = None, labels: str | None = None,
                learned_lr: bool | None = None) -> AuditPlan:
    """Check and resolve a run of the named audits (default: all) before any work: unknown audits,
    presets, options and values fail here. ``overrides`` maps an audit name to options that replace its
    preset defaults; ``labels`` and ``learned_lr`` None take the preset's
    (:data:`~distilkit.audit._registry.TRAINING_DEFAULTS`)."""
    check_preset(preset)
    training = {**TRAINING_DEFAULTS[preset], **{k: v for k, v in (("labels", labels), ("learned_lr", learned_lr))
                                                 if v is not None}}
    if training["labels"] not in ("hard", "soft"):
        raise DistilkitError(f"labels must be 'hard' or 'soft', got {training['labels']!r}")
    overrides = overrides or {}
    specs = [get_audit(n) for n in (only or list_audits())]
    for name in set(overrides) - {spec.name for spec in specs}:  # options of audits not run are checked too
        get_audit(name).resolve(preset, overrides[name])
    configs = {spec.name: spec.resolve(preset, overrides.get(spec.name)) for spec in specs}
    return AuditPlan(specs, configs, preset, seed, training["labels"], bool(training["learned_lr"]))


@dataclass
class AuditReport:
    """The results of audits of one set, in memory: per audit its report entry (question, preset, seed,
    config, summary, verdict, tests, series, tables, figures, artifacts, date, seconds), and the files the
    audits made (figures, artifacts) as bytes by their path relative to a set folder (``audit/...``).
    :meth:`save` merges it into a set folder; nothing is written before."""

    audits: dict[str, dict[str, Any]]
    source: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    model_cache: dict[str, int] = field(default_factory=dict)
    distilkit_version: str = field(default_factory=distilkit_version)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    @property
    def summary(self) -> dict[str, dict[str, Any]]:
        """Each audit's summary scalars (what the card's YAML holds), by audit name."""
        return {name: entry["summary"] for name, entry in self.audits.items()}

    @property
    def verdicts(self) -> dict[str, str]:
        """Each audit's verdict sentence, by audit name."""
        return {name: entry["verdict"] for name, entry in self.audits.items()}

    @property
    def figures(self) -> dict[str, bytes]:
        """The figures as PNG bytes, by path relative to the set folder (e.g. ``audit/mixing_curve.png``);
        ``IPython.display.Image(data)`` shows one."""
        return {path: self.files[path] for entry in self.audits.values() for path in entry.get("figures", [])
                if path in self.files}

    def to_dict(self, set_name: str | None = None) -> dict[str, Any]:
        """The ``audit/report.json`` layout of these audits alone."""
        return {"distilkit_version": self.distilkit_version, "created": self.created, "set": set_name,
                "source": self.source, "model_cache": self.model_cache, "audits": self.audits}

    def to_markdown(self) -> str:
        """The card's audit section for these audits (figures referenced by their relative paths)."""
        return audit_markdown(self.to_dict())

    def save(self, folder: str | Path, wait: float | None = None) -> Path:
        """Merge into the set folder ``folder``: the audits' files, ``audit/report.json`` (audits of the
        same name replaced, the others kept) and the card's ``distilkit.audits`` and audit section. Holds the
        set's lock while it merges (waiting ``wait`` s, default ``DISTILKIT_LOCK_TIMEOUT``). Returns ``folder``."""
        self._merge_into(Path(folder), wait)
        return Path(folder)

    def _merge_into(self, folder: Path, wait: float | None) -> dict:
        """:meth:`save`, returning the merged report."""
        if not is_distilkit_set(folder):
            raise DistilkitError(f"{folder} is not a distilkit set folder; save the set there first")
        check_output_folder(folder / "audit", "SET")
        check_output_folder(lock_path(folder).parent, "the folder holding SET")
        with FolderLock(folder, "audit", wait=lock_timeout() if wait is None else wait):
            return _merge_and_write(folder, self)


def audit_real(dset: DistilledSet, source: str | RealData | Any = None, accelerator=None) -> RealData:
    """The set's real data for its audits (``source``: see :func:`distilkit.evaluate.real_for_set`),
    checked against the set and put in the set's pixel space."""
    real = real_for_set(dset, source, accelerator)
    if real.class_names != dset.class_names or tuple(real.image_shape) != tuple(dset.images.shape[1:]):
        raise DistilkitError("the source does not match the set (classes or image shape differ); pass --source")
    return dataclasses.replace(real, pixel_space=dset.pixel_space)


def run_planned(plan: AuditPlan, dset: DistilledSet, real: RealData, accelerator,
                cache: RealModelCache | None = None) -> AuditReport:
    """Run ``plan`` on ``dset`` and its real data (from :func:`audit_real`) on every process; the main
    process returns the report, the others an empty one. Writes nothing but the real-model cache: the
    audits write their figures and artifacts into a temporary folder, read back into the report."""
    cache = cache or RealModelCache()
    today = dt.date.today().isoformat()
    entries: dict[str, dict] = {}
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="distilkit-audit-") as staging:
        ctx = AuditContext(accelerator=accelerator, seed=plan.seed, preset=plan.preset,
                           out_dir=Path(staging) / "audit", models=cache, labels=plan.labels,
                           learned_lr=plan.learned_lr)
        used = {"labels": dset.labels_used(ctx.labels), "learned_lr": bool(ctx.learned_lr and dset.learned_lr)}
        # Distributed audits run first, on every process, in the same order (so no process waits in a
        # collective while the main one runs other audits); the rest run on the main process alone.
        for spec in sorted(plan.specs, key=lambda spec: not spec.distributed):
            if not (accelerator.is_main_process or spec.distributed):
                continue
            started = time.perf_counter()
            result = spec.fn(dset, real, plan.configs[spec.name], ctx)
            if accelerator.is_main_process:
                entries[spec.name] = {
                    "question": spec.question, "preset": plan.preset, "seed": plan.seed, **used,
                    "config": plan.configs[spec.name], "summary": result.summary, "verdict": result.verdict,
                    "tests": result.tests, "series": result.series, "tables": [t.to_dict() for t in result.tables],
                    "figures": result.figures, "artifacts": result.artifacts, "date": today,
                    "seconds": round(time.perf_counter() - started, 1)}
        if accelerator.is_main_process:
            files = {p.relative_to(staging).as_posix(): p.read_bytes() for p in sorted(Path(staging).rglob("*"))
                     if p.is_file() and not p.name.startswith(".")}
    return AuditReport(entries, real.info.get("id"), files, {"hits": cache.hits, "misses": cache.misses})


def run_audits(folder: str | Path, only: list[str] | None = None, preset: str = "cpu", seed: int = 0,
               source: str | None = None, accelerator=None, cache: RealModelCache | None = None,
               overrides: dict[str, dict] | None = None, labels: str | None = None,
               learned_lr: bool | None = None) -> dict:
    """Run the named audits (default: all) on the set in ``folder``, merge them into its report and card,
    and return the merged report (``audit/report.json``). Options as :func:`plan_audits`."""
    folder = Path(folder)
    plan = plan_audits(only, preset, seed, overrides, labels, learned_lr)
    accelerator = accelerator or make_accelerator()
    dset = DistilledSet.load(folder)
    load_report(folder)  # a corrupt report fails before any work; it is read again, under the lock, to merge
    if accelerator.is_main_process:
        check_output_folder(folder / "audit", "SET")
        check_output_folder(lock_path(folder).parent, "the folder holding SET")
    wait = lock_timeout()
    report = run_planned(plan, dset, audit_real(dset, source, accelerator), accelerator, cache)
    merged: dict = {}
    if accelerator.is_main_process:
        # Another audit of this set may have finished while these ran: the save merges into what is on disk now.
        merged = report._merge_into(folder, wait)
    accelerator.wait_for_everyone()
    return merged if accelerator.is_main_process else load_report(folder)


def _merge_and_write(folder: Path, new: AuditReport) -> dict:
    """Merge ``new`` into the set's files, report and card as they are on disk now; returns the report."""
    for rel, data in new.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    report = load_report(folder)
    report.setdefault("audits", {}).update(new.audits)
    report.update({"distilkit_version": distilkit_version(),
                   "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                   "set": str(folder), "source": new.source, "model_cache": new.model_cache})
    report = {k: report[k] for k in ("distilkit_version", "created", "set", "source", "model_cache", "audits")}
    write_atomic(folder / REPORT_FILE, jsonio.dumps(report, indent=2, default=str))
    card = read_card(folder)
    meta = card.data.get("distilkit")
    meta["audits"] = card_audit_entries(report)
    card.data["distilkit"] = meta
    card.text = replace_section(card.text, "audit", audit_markdown(report))
    write_atomic(folder / "README.md", str(card))
    return report

