"""``distilkit compare``: the study's overlays across several distilled sets of one source.

For sets distilled from the same real data (e.g. dm, random, dc, mtt at one IPC) this writes, into
one folder: the mixing curves, the agreement distributions, the early-recognition curves (accuracy
and loss on each distilled set along real training) and the Hessian trace of every set along ONE
shared real training run — the study computes all its sets along the same run, so the real model is
trained once and the trace is estimated on each set's data (and on a real subsample) at the same
checkpoints — plus a summary table with each verdict and its interval or test, as PNG figures,
``README.md`` and ``comparison.json``.

Audits are reused, never redone: a set whose ``audit/report.json`` already holds an audit run with
the same preset, seed, source and resolved options is read as it is; only the missing audits run (as
``distilkit audit`` would, writing into that set's report), and they reuse the cached real-data
models and pools. Sets in different pixel spaces are mapped into the first set's space for the
shared curvature run (through [0, 1] pixels).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from distilkit import jsonio
from distilkit.audit._common import pyplot, to_original_pixels
from distilkit.audit._hessian import hutchinson_trace
from distilkit.audit._real_runs import parse_iterations, seeded_model
from distilkit.audit._registry import TRAINING_DEFAULTS, get_audit
from distilkit.audit._report import load_report, run_audits
from distilkit.audit.curvature import curvature_pattern, ema
from distilkit.data.real import RealData
from distilkit.data.sources import load_real
from distilkit.distilled import DistilledSet
from distilkit.errors import DistilkitError
from distilkit.evaluate import source_config_of
from distilkit.outputs import write_atomic
from distilkit.real_models import RealModelCache
from distilkit.runtime import distilkit_version, make_accelerator
from distilkit.seeding import generator as seed_generator
from distilkit.train import TrainConfig, training_steps

COMPARED_AUDITS = ("mixing", "agreement", "early-recognition")
SUMMARY_FILE = "comparison.json"


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def reusable(report: dict, name: str, preset: str, seed: int, config: dict, source: str | None,
             labels: str = "hard", learned_lr: bool = False) -> bool:
    """Whether ``report`` holds audit ``name`` run with exactly this preset, seed, options, source and
    distilled-training labels and lr (and with the series the overlays need)."""
    entry = report.get("audits", {}).get(name)
    return bool(entry) and entry.get("preset") == preset and entry.get("seed") == seed and \
        _plain(entry.get("config")) == _plain(config) and bool(entry.get("series")) and \
        report.get("source") == source and entry.get("labels", "hard") == labels and \
        bool(entry.get("learned_lr", False)) == learned_lr


def set_label(dset: DistilledSet, folder: Path) -> str:
    return f"{dset.method} ipc{dset.ipc} ({folder.name})"


def shared_curvature(sets: list[DistilledSet], real: RealData, cfg: dict, seed: int, device,
                     labels: str = "hard") -> dict:
    """Hessian traces along ONE real training run, at the curvature audit's checkpoints, on a seeded real
    subsample and on every set (mapped into ``real``'s pixel space, trained on with ``labels``), each judged
    by :func:`~distilkit.audit.curvature.curvature_pattern`: {"iterations", "real", "sets": [...],
    "patterns": [...]}. The run, the subsample and the probes come from the curvature audit's seed streams,
    so each set's curve is the one ``distilkit audit --only curvature`` measures for it."""
    protocol = TrainConfig(model=cfg["model"], **cfg["protocol"])
    checkpoints = parse_iterations(cfg["iterations"])
    per_class = max(1, min(int(real.class_counts.min()), int(cfg["real_subsample"]) // real.num_classes))
    pick = real.sample_per_class(per_class, seed_generator("curvature-subsample", seed)).reshape(-1)
    data = [("real", real.batch(pick), real.train_labels[pick])]
    for dset in sets:
        images = dset.images
        if dset.pixel_space.to_card() != real.pixel_space.to_card():
            images = real.pixel_space.from_uint8(to_original_pixels(images, dset.pixel_space))
        data.append(("distilled", images, dset.training_targets(labels)))
    model = seeded_model(cfg["model"], real, seed, "curvature-run")
    train_images = real.batch(torch.arange(real.train_labels.shape[0]))
    traces: list[list[float]] = [[] for _ in data]
    probes: list[list[list[float]]] = [[] for _ in data]
    bar = tqdm(total=len(checkpoints), desc="shared curvature run")
    for t in training_steps(model, train_images, real.train_labels, protocol,
                            seed_generator("curvature-run", seed, "order"), device=device, steps=checkpoints[-1]):
        if t not in checkpoints:
            continue
        for s, (name, x, y) in enumerate(data):
            estimate = hutchinson_trace(model, x, y, seed_generator("curvature-probes", seed, t, name),
                                        cfg["max_probes"], cfg["tolerance"], cfg["probe_batch"], cfg["chunk_size"])
            traces[s].append(estimate.trace)
            probes[s].append(estimate.values)
        bar.update()
    bar.close()
    patterns = [curvature_pattern(checkpoints, ema(checkpoints, trace, cfg["ema"]), set_probes, probes[0], seed)
                for trace, set_probes in zip(traces[1:], probes[1:], strict=True)]
    return {"iterations": checkpoints, "real": traces[0], "sets": traces[1:], "patterns": patterns,
            "real_subsample": int(pick.numel()), "ema": cfg["ema"], "model": cfg["model"], "labels": labels}


def _test_cell(test: dict | None) -> str:
    if not test:
        return "-"
    if test.get("ci") is not None:
        return f"{test['estimate']:+.3f} [{test['ci'][0]:+.3f}, {test['ci'][1]:+.3f}]: {test['outcome']}"
    return f"p = {test['p']:.2g}: {test['outcome']}"


def curvature_cells(row: dict) -> list[str]:
    """The two interval cells of a row's curvature pattern: ends below real, falls after its peak."""
    tests = row["curvature_tests"]
    falls = tests[1] if len(tests) > 1 else None
    return [_test_cell(tests[0]), _test_cell(falls) if falls else "peaks at the last checkpoint"]


def compare_sets(folders: list[str | Path], out: str | Path, source: str | None = None, preset: str = "cpu",
                 seed: int = 0, accelerator=None, cache: RealModelCache | None = None,
                 overrides: dict[str, dict] | None = None) -> dict:
    """Compare the sets in ``folders`` (same source data); write figures, README.md and comparison.json
    into ``out``; return the comparison dict."""
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise DistilkitError("compare needs at least two sets")
    if len({f.resolve() for f in folders}) != len(folders):
        raise DistilkitError("compare: the same set is named twice")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DistilkitError(f"--out {out} exists and is not a folder")
    overrides = overrides or {}
    configs = {name: get_audit(name).resolve(preset, overrides.get(name))
               for name in (*COMPARED_AUDITS, "curvature")}
    accelerator = accelerator or make_accelerator()
    cache = cache or RealModelCache()
    sets = [DistilledSet.load(f) for f in folders]
    real = load_real(source_config_of(sets[0], source), pixel_space="raw",
                     seed=int((sets[0].provenance or {}).get("seed", 0)))
    for folder, dset in zip(folders, sets, strict=True):
        if real.class_names != dset.class_names or tuple(real.image_shape) != tuple(dset.images.shape[1:]):
            raise DistilkitError(f"{folder} does not match the source of {folders[0]} (classes or image shape "
                                 "differ); compare sets of one source, or pass --source")
    source_id = real.info.get("id")

    reports, reused, ran = [], {}, {}
    training = TRAINING_DEFAULTS[preset]  # how run_audits trains on each set: the preset's labels and lr
    for folder, dset in zip(folders, sets, strict=True):
        report = load_report(folder)
        used = (dset.labels_used(training["labels"]), bool(training["learned_lr"] and dset.learned_lr))
        missing = [name for name in COMPARED_AUDITS
                   if not reusable(report, name, preset, seed, configs[name], source_id, *used)]
        reused[str(folder)] = [n for n in COMPARED_AUDITS if n not in missing]
        ran[str(folder)] = missing
        if missing:
            report = run_audits(folder, only=missing, preset=preset, seed=seed, source=source,
                                accelerator=accelerator, cache=cache, overrides=overrides)
        reports.append(report)
    if not accelerator.is_main_process:  # the audits share their work; the rest is the main process's
        return {}
    real.pixel_space = sets[0].pixel_space
    curvature = shared_curvature(sets, real, configs["curvature"], seed, accelerator.device, training["labels"])

    labels = [set_label(d, f) for d, f in zip(sets, folders, strict=True)]
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(labels, reports, curvature, out)
    rows = []
    for label, dset, report, trace, pattern in zip(labels, sets, reports, curvature["sets"], curvature["patterns"],
                                                   strict=True):
        audits = report["audits"]
        mixing, agreement = audits["mixing"], audits["agreement"]
        early = audits["early-recognition"]["summary"]
        smooth = ema(curvature["iterations"], trace, curvature["ema"])
        real_end = ema(curvature["iterations"], curvature["real"], curvature["ema"])[-1]
        rows.append({
            "set": label, "method": dset.method, "ipc": dset.ipc,
            "distilled_only": mixing["summary"]["distilled_only"], "random_only": mixing["summary"]["random_only"],
            "mixing_small_k": (mixing.get("tests") or [None])[0],
            "agreement_early": agreement["summary"]["early/agreement_mean"],
            "agreement_subset": agreement["summary"]["subset/agreement_mean"],
            "agreement_test": (agreement.get("tests") or [None])[0],
            "plateau_iteration": early["plateau_iteration"],
            "test_gain_after_plateau": early["test_gain_after_plateau"],
            "early_recognition_test": (audits["early-recognition"].get("tests") or [None])[0],
            "distilled_loss_end": early.get("distilled_loss_end"),
            "curvature_peak_iteration": curvature["iterations"][pattern["peak_index"]],
            "curvature_end_vs_real": round(smooth[-1] / max(abs(real_end), 1e-12), 4),
            "curvature_tests": pattern["tests"], "curvature_outcome": pattern["outcome"],
        })
    comparison = {"distilkit_version": distilkit_version(),
                  "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "source": source_id, "preset": preset, "seed": seed, "sets": [str(f) for f in folders],
                  "audits_reused": reused, "audits_run": ran, "rows": rows, "curvature": curvature,
                  "figures": figures}
    write_atomic(out / SUMMARY_FILE, jsonio.dumps(comparison, indent=2, default=str))
    write_atomic(out / "README.md", comparison_markdown(comparison))
    return comparison


def comparison_markdown(comparison: dict) -> str:
    """The comparison as a Markdown page: the summary table, then the figures."""
    head = ["set", "distilled only", "random only", "a little real data lowers accuracy (Δ, 95% CI)",
            "agreement early / subset", "early > subset (Mann–Whitney)", "recognition plateau (iteration)",
            "test gain after plateau (95% CI)", "trace peak (iteration)", "end trace / real",
            "trace ends below real (Δ, 95% CI)", "trace falls after peak (Δ, 95% CI)",
            "early peak, then below real (the study's curvature finding)"]
    lines = [f"# Comparison of {len(comparison['rows'])} distilled sets of `{comparison['source']}`", "",
             f"distilkit {comparison['distilkit_version']}, `{comparison['preset']}` preset, "
             f"seed {comparison['seed']}. "
             "Analyses of *What is Dataset Distillation Learning?* (Yang et al., ICML 2024); the Hessian traces of "
             f"all sets are measured along one shared real training run ({comparison['curvature']['model']}, real "
             f"subsample of {comparison['curvature']['real_subsample']} images). Machine-readable: "
             f"`{SUMMARY_FILE}`.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in comparison["rows"]:
        agree = "-" if r["agreement_early"] is None or r["agreement_subset"] is None else \
            f"{r['agreement_early']:.3f} / {r['agreement_subset']:.3f}"
        cells = [r["set"], f"{r['distilled_only']:.3f}", f"{r['random_only']:.3f}", _test_cell(r["mixing_small_k"]),
                 agree, _test_cell(r["agreement_test"]), str(r["plateau_iteration"]),
                 _test_cell(r["early_recognition_test"]), str(r["curvature_peak_iteration"]),
                 f"{r['curvature_end_vs_real']:.2f}", *curvature_cells(r), r["curvature_outcome"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Audits reused from each set's `audit/report.json` / run now:", ""]
    for folder in comparison["sets"]:
        lines.append(f"- `{Path(folder).name}`: reused {', '.join(comparison['audits_reused'][folder]) or 'none'}; "
                     f"ran {', '.join(comparison['audits_run'][folder]) or 'none'}")
    lines.append("")
    lines += [f"![{Path(f).stem}]({f})" for f in comparison["figures"]]
    return "\n".join(lines) + "\n"


def _save(fig, out: Path, name: str) -> str:
    write_atomic(out / name, lambda tmp: fig.savefig(tmp, dpi=90, bbox_inches="tight"))
    return name


def _figures(labels: list[str], reports: list[dict], curvature: dict, out: Path) -> list[str]:
    plt = pyplot()
    figures = []

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, report) in enumerate(zip(labels, reports, strict=True)):
        series = report["audits"]["mixing"]["series"]
        xs = list(range(len(series["ks"])))
        ax.errorbar(xs, series["distilled_mean"], yerr=series["distilled_std"], marker="o", capsize=3,
                    color=f"C{i}", label=f"{label} + k real")
        ax.plot(xs, series["random_mean"], linestyle="--", color=f"C{i}", alpha=0.6)
        ax.set_xticks(xs, [str(k) for k in series["ks"]])
    ax.plot([], [], linestyle="--", color="grey", label="random real (same size) + k, per set")
    ax.set_xlabel("k real images added per class")
    ax.set_ylabel("real test accuracy")
    ax.legend(fontsize=7)
    figures.append(_save(fig, out, "mixing.png"))

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels)), 4))
    data, positions, ticks = [], [], []
    for i, report in enumerate(reports):
        series = report["audits"]["agreement"]["series"]
        data += [series["early"] or [float("nan")], series["subset"] or [float("nan")]]
        positions += [3 * i, 3 * i + 1]
        ticks.append(3 * i + 0.5)
    boxes = ax.boxplot(data, positions=positions, widths=0.8, patch_artist=True)
    for j, patch in enumerate(boxes["boxes"]):
        patch.set_facecolor("C0" if j % 2 == 0 else "C1")
    ax.set_xticks(ticks, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("agreement with the distilled-trained models")
    ax.plot([], [], "s", color="C0", label="early-stopped real runs")
    ax.plot([], [], "s", color="C1", label="subset-trained real models")
    ax.legend(fontsize=8)
    figures.append(_save(fig, out, "agreement.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    its = curvature["iterations"]
    ax.plot(its, ema(its, curvature["real"], curvature["ema"]), color="black",
            label=f"real ({curvature['real_subsample']} images)")
    for i, (label, trace) in enumerate(zip(labels, curvature["sets"], strict=True)):
        ax.plot(its, ema(its, trace, curvature["ema"]), color=f"C{i}", label=label)
    ax.set_xlabel("iteration of the shared real training run")
    ax.set_ylabel(f"Hessian trace (EMA {curvature['ema']})")
    ax.legend(fontsize=7)
    figures.append(_save(fig, out, "curvature.png"))

    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(12, 4))
    for i, (label, report) in enumerate(zip(labels, reports, strict=True)):
        series = report["audits"]["early-recognition"]["series"]
        xs = list(range(len(series["distilled_accuracy"])))
        acc_ax.plot(xs, series["distilled_accuracy"], color=f"C{i}", label=label)
        loss_ax.plot(xs, series["distilled_loss"], color=f"C{i}", label=label)
        if i == 0:
            acc_ax.plot(xs, series["test_accuracy"], color="black", alpha=0.6, label="real test set")
    acc_ax.set_xlabel("iteration of real training")
    acc_ax.set_ylabel("accuracy")
    acc_ax.legend(fontsize=7)
    loss_ax.set_xlabel("iteration of real training")
    loss_ax.set_ylabel("cross-entropy on the distilled set")
    figures.append(_save(fig, out, "early_recognition.png"))
    return figures


def push_comparison(out: str | Path, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload the comparison folder to Hub dataset repo ``repo_id``; returns the commit sha."""
    from huggingface_hub import HfApi

    from distilkit.hub.publish import check_repo_id
    from distilkit.hub.repo import hub_call, resolve_token

    check_repo_id(repo_id)
    out = Path(out)
    token = resolve_token(token)
    with hub_call("write", repo_id, token):
        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
        info = api.upload_folder(folder_path=str(out), repo_id=repo_id, repo_type="dataset",
                                 allow_patterns=["README.md", SUMMARY_FILE, "*.png"],
                                 commit_message="distilkit compare")
    return info.oid
