"""Run audits on a distilled set and write the report: ``audit/report.json``, figures, and the card.

``audit/report.json`` = {"distilkit_version", "created", "set", "source", "audits": {NAME: {"question",
"preset", "seed", "config", "summary", "verdict", "tests", "series", "tables", "figures", "artifacts",
"date", "seconds"}}}: ``tests`` are the intervals and tests the verdict follows from (see
:mod:`distilkit.audit.stats`), ``series`` the curves behind the figures. The card gets the summaries
(and each test's estimate, interval or p-value and outcome) under ``distilkit.audits`` and a human
section between the audit markers.
Re-running replaces only the audits it re-ran, keeps the others, and writes every file atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from distilkit import jsonio
from distilkit.audit.real_models import RealModelCache
from distilkit.audit.registry import AUDIT_PRESETS, TRAINING_DEFAULTS, AuditContext, Table, get_audit, list_audits
from distilkit.data.sources import load_real
from distilkit.distilled import DistilledSet
from distilkit.errors import DistilkitError
from distilkit.evaluate import source_config_of
from distilkit.hub.card import read_card, replace_section
from distilkit.outputs import FolderLock, check_output_folder, lock_path, lock_timeout, write_atomic
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


def run_audits(folder: str | Path, only: list[str] | None = None, preset: str = "cpu", seed: int = 0,
               source: str | None = None, accelerator=None, cache: RealModelCache | None = None,
               overrides: dict[str, dict] | None = None, labels: str | None = None,
               learned_lr: bool | None = None) -> dict:
    """Run the named audits (default: all) on the set in ``folder``; return the merged report.
    ``overrides`` maps an audit name to options that replace its preset defaults. ``labels``
    ("hard" | "soft") and ``learned_lr`` say how every audit trains on the distilled set (None: the
    preset's, :data:`~distilkit.audit.registry.TRAINING_DEFAULTS`)."""
    folder = Path(folder)
    if preset not in AUDIT_PRESETS:
        raise DistilkitError(f"unknown audit preset {preset!r}; choose from {', '.join(AUDIT_PRESETS)}")
    training = {**TRAINING_DEFAULTS[preset], **{k: v for k, v in (("labels", labels), ("learned_lr", learned_lr))
                                                 if v is not None}}
    if training["labels"] not in ("hard", "soft"):
        raise DistilkitError(f"labels must be 'hard' or 'soft', got {training['labels']!r}")
    accelerator = accelerator or make_accelerator()
    names = only or list_audits()
    specs = [get_audit(n) for n in names]
    configs = {spec.name: spec.resolve(preset, (overrides or {}).get(spec.name)) for spec in specs}
    dset = DistilledSet.load(folder)
    load_report(folder)  # a corrupt report fails before any work; it is read again, under the lock, to merge
    if accelerator.is_main_process:
        check_output_folder(folder / "audit", "SET")
        check_output_folder(lock_path(folder).parent, "the folder holding SET")
    wait = lock_timeout()
    with accelerator.main_process_first():
        real = load_real(source_config_of(dset, source), pixel_space="raw",
                         seed=int((dset.provenance or {}).get("seed", 0)))
    if real.class_names != dset.class_names or tuple(real.image_shape) != tuple(dset.images.shape[1:]):
        raise DistilkitError("the source does not match the set (classes or image shape differ); pass --source")
    real.pixel_space = dset.pixel_space
    cache = cache or RealModelCache()
    ctx = AuditContext(accelerator=accelerator, seed=seed, preset=preset, out_dir=folder / "audit", models=cache,
                       labels=training["labels"], learned_lr=bool(training["learned_lr"]))
    used = {"labels": dset.labels_used(ctx.labels), "learned_lr": bool(ctx.learned_lr and dset.learned_lr)}
    today = dt.date.today().isoformat()
    entries: dict[str, dict] = {}
    # Distributed audits run first, on every process, in the same order (so no process waits in a collective
    # while the main one runs other audits); the rest run on the main process alone.
    for spec in sorted(specs, key=lambda spec: not spec.distributed):
        if not (accelerator.is_main_process or spec.distributed):
            continue
        started = time.perf_counter()
        result = spec.fn(dset, real, configs[spec.name], ctx)
        if accelerator.is_main_process:
            entries[spec.name] = {
                "question": spec.question, "preset": preset, "seed": seed, **used, "config": configs[spec.name],
                "summary": result.summary, "verdict": result.verdict, "tests": result.tests, "series": result.series,
                "tables": [t.to_dict() for t in result.tables],
                "figures": result.figures, "artifacts": result.artifacts, "date": today,
                "seconds": round(time.perf_counter() - started, 1)}
    report: dict = {}
    if accelerator.is_main_process:
        # Another audit of this set may have finished while these ran: merge into what is on disk now.
        with FolderLock(folder, "audit", wait=wait):
            report = _merge_and_write(folder, entries, real.info.get("id"), cache)
    accelerator.wait_for_everyone()
    return report if accelerator.is_main_process else load_report(folder)


def _merge_and_write(folder: Path, entries: dict[str, dict], source_id, cache: RealModelCache) -> dict:
    """Merge ``entries`` into the set's report and card as they are on disk now; returns the report."""
    report = load_report(folder)
    report.setdefault("audits", {}).update(entries)
    report.update({"distilkit_version": distilkit_version(),
                   "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                   "set": str(folder), "source": source_id,
                   "model_cache": {"hits": cache.hits, "misses": cache.misses}})
    report = {k: report[k] for k in ("distilkit_version", "created", "set", "source", "model_cache", "audits")}
    write_atomic(folder / REPORT_FILE, jsonio.dumps(report, indent=2, default=str))
    card = read_card(folder)
    meta = card.data.get("distilkit")
    meta["audits"] = card_audit_entries(report)
    card.data["distilkit"] = meta
    card.text = replace_section(card.text, "audit", audit_markdown(report))
    write_atomic(folder / "README.md", str(card))
    return report
