"""``distilkit bench``: a grid of distillations (methods x IPC x seeds), every set evaluated with the
same protocol, summarised in ``results.json`` and ``results.md`` beside the published numbers.

Each cell runs as its own ``distilkit distill ... --resume`` then ``distilkit evaluate`` process
(``launcher``: ``python -m distilkit`` by default, or e.g. ``accelerate launch -m distilkit`` for
many GPUs), so that its peak memory is its own, a failing cell is recorded and the grid goes on,
and an interrupted grid resumes: finished cells are kept (the grid's fingerprint must match), a
half-distilled set continues from its checkpoint. ``results.json`` is rewritten atomically after
every cell.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from distilkit import jsonio
from distilkit.errors import DistilkitError
from distilkit.outputs import check_output_folder, write_atomic

# REFERENCE.md §4: published test accuracy (%) on Fashion-MNIST, ConvNet-3, IPC 1 / 10 / 50, with the
# reference's provenance tag ([code] read in the method's repo, [paper] its own table, [R] recalled).
PUBLISHED_FMNIST: dict[str, tuple[dict[int, float], str]] = {
    "random": ({1: 51.4, 10: 73.8, 50: 82.5}, "[R] DC/DM papers' random-real baseline"),
    "herding": ({1: 67.0, 10: 71.1, 50: 71.9}, "[R] DC paper's coreset table"),
    "dc": ({1: 70.5, 10: 82.3, 50: 83.6}, "[code] VICO-UoE/DatasetCondensation"),
    "dsa": ({1: 70.6, 10: 84.6, 50: 88.7}, "[code] VICO-UoE/DatasetCondensation"),
    "dm": ({1: 70.0, 10: 83.0, 50: 88.0}, "[R] approx., DM paper"),
    "krr": ({1: 73.8, 10: 86.8, 50: 87.8}, "[paper] KIP, to a width-1024 net"),
}
FULL_DATA_FMNIST = 93.5


@dataclass
class BenchGrid:
    """What a bench run covers; its fingerprint guards a resumed grid against a changed one."""

    source: str
    methods: list[str]
    ipcs: list[int]
    seeds: list[int]
    preset: str = "cpu"
    eval_preset: str | None = None
    runs: int = 5
    method_args: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def cell_name(method: str, ipc: int, seed: int) -> str:
    return f"{method}-ipc{ipc}-seed{seed}"


def _run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with its output appended to ``log``; returns the process's peak RSS in MB (its own,
    from ``wait4``: with a launcher that forks workers, the launcher's)."""
    with log.open("a") as handle:
        handle.write(f"$ {shlex.join(cmd)}\n")
        handle.flush()
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        lines = [line for line in log.read_text().splitlines() if line.startswith("error:")]
        raise DistilkitError(lines[-1][7:] if lines else f"exit {proc.returncode}; see {log}")
    return round(usage.ru_maxrss / 1024, 1)


def run_cell(grid: BenchGrid, method: str, ipc: int, seed: int, out: Path, launcher: list[str]) -> dict:
    """Distill and evaluate one cell; returns its row for ``results.json``."""
    from distilkit.distilled import DistilledSet

    name = cell_name(method, ipc, seed)
    set_dir, log = out / "sets" / name, out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    row: dict = {"method": method, "ipc": ipc, "seed": seed, "set": str(set_dir.relative_to(out))}
    distill = [*launcher, "distill", "--method", method, "--ipc", str(ipc), "--seed", str(seed),
               "--preset", grid.preset, "--out", str(set_dir)]
    if grid.source != "embedded":
        distill += ["--source", grid.source]
    for key, value in grid.method_args.items():
        distill += ["--arg", f"{key}={value}"]
    started = time.perf_counter()
    try:
        if not (set_dir / "README.md").is_file():
            row["peak_rss_mb"] = _run([*distill, "--resume"], log)
        _run([*launcher, "evaluate", str(set_dir), "--runs", str(grid.runs),
              "--preset", grid.eval_preset or grid.preset], log)
    except DistilkitError as err:
        return {**row, "status": "failed", "error": str(err)}
    dset = DistilledSet.load(set_dir)
    result = next(r for r in dset.evaluation if r["preset"] == (grid.eval_preset or grid.preset))
    iterations = (dset.config or {}).get("method_args", {}).get("iterations")
    wall = float((dset.provenance or {}).get("wall_time_s", 0.0))
    return {**row, "status": "done", "accuracy_mean": 100 * result["mean"], "accuracy_std": 100 * result["std"],
            "accuracies": [100 * a for a in result["accuracies"]], "eval_model": result["model"],
            "distill_wall_s": wall, "s_per_iteration": round(wall / iterations, 4) if iterations else None,
            "iterations": iterations, "hardware": (dset.provenance or {}).get("hardware"),
            "cell_wall_s": round(time.perf_counter() - started, 1)}


def _write_json(path: Path, payload: dict) -> None:
    write_atomic(path, jsonio.dumps(payload, indent=2))


def load_results(out: Path, grid: BenchGrid) -> dict:
    path = out / "results.json"
    if not path.is_file():
        return {"grid": asdict(grid), "fingerprint": grid.fingerprint(), "cells": {}}
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DistilkitError(f"{path} is not valid JSON ({err.msg}); remove it to start the grid over") from None
    if results.get("fingerprint") != grid.fingerprint():
        raise DistilkitError(f"{out} holds a bench of a different grid; choose another --out or remove it")
    return results


def is_fashion_mnist(source: str) -> bool:
    """The embedded default and Fashion-MNIST folders/ids (the published table is for Fashion-MNIST)."""
    return source == "embedded" or "fashion" in source.lower()


def check_grid(grid: BenchGrid) -> None:
    """Everything about ``grid`` that can be checked without running a cell: presets, IPCs, seeds, the
    methods with their options at every IPC, and that the source opens with image and label columns."""
    from distilkit.config import parse_key_values
    from distilkit.data.sources import SourceConfig, probe_source
    from distilkit.methods import get_method
    from distilkit.presets import check_preset
    from distilkit.train import train_preset

    check_preset(grid.preset)
    train_preset(grid.eval_preset or grid.preset)
    for what, values in (("--methods", grid.methods), ("--ipc", grid.ipcs), ("--seeds", grid.seeds)):
        if not values:
            raise DistilkitError(f"{what} is empty")
    if min(grid.ipcs) < 1:
        raise DistilkitError(f"--ipc values must be at least 1, got {min(grid.ipcs)}")
    if min(grid.seeds) < 0:
        raise DistilkitError(f"--seeds must not be negative, got {min(grid.seeds)}")
    if grid.runs < 1:
        raise DistilkitError(f"--runs must be at least 1, got {grid.runs}")
    method_args = parse_key_values(tuple(f"{k}={v}" for k, v in grid.method_args.items()))
    for method in grid.methods:
        spec = get_method(method)
        for ipc in grid.ipcs:
            spec.resolve(grid.preset, ipc, method_args)
    probe_source(SourceConfig(source=grid.source))


def run_bench(grid: BenchGrid, out: Path, launcher: list[str] | None = None) -> dict:
    """Run every missing or failed cell of ``grid`` into ``out``; returns the results."""
    check_grid(grid)  # bad input fails before OUT is created or any cell runs
    launcher = launcher or [sys.executable, "-m", "distilkit"]
    check_output_folder(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(out, grid)
    cells = [(m, i, s) for m in grid.methods for i in grid.ipcs for s in grid.seeds]
    todo = [c for c in cells if results["cells"].get(cell_name(*c), {}).get("status") != "done"]
    for method, ipc, seed in tqdm(todo, desc="bench", unit="cell"):
        results["cells"][cell_name(method, ipc, seed)] = run_cell(grid, method, ipc, seed, out, launcher)
        results["updated"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        _write_json(out / "results.json", results)
    table = markdown_table(results)
    write_atomic(out / "results.md", table)
    return results


def summarize(results: dict) -> list[dict]:
    """One row per (method, IPC): mean ± std over every evaluation run of every seed, mean costs."""
    grid = results["grid"]
    rows = []
    for method in grid["methods"]:
        for ipc in grid["ipcs"]:
            done = [c for c in results["cells"].values()
                    if c["method"] == method and c["ipc"] == ipc and c.get("status") == "done"]
            failed = [c for c in results["cells"].values()
                      if c["method"] == method and c["ipc"] == ipc and c.get("status") == "failed"]
            accs = [a for c in done for a in c["accuracies"]]
            row = {"method": method, "ipc": ipc, "seeds": len(done), "failed": len(failed),
                   "errors": [c["error"] for c in failed]}
            if accs:
                walls = [c["distill_wall_s"] for c in done]
                per_it = [c["s_per_iteration"] for c in done if c.get("s_per_iteration") is not None]
                peaks = [c["peak_rss_mb"] for c in done if c.get("peak_rss_mb")]
                row.update(mean=statistics.fmean(accs), std=statistics.pstdev(accs), n=len(accs),
                           wall=statistics.fmean(walls), s_per_it=statistics.fmean(per_it) if per_it else None,
                           peak=max(peaks) if peaks else None)
            published = PUBLISHED_FMNIST.get(method) if is_fashion_mnist(grid["source"]) else None
            if published and ipc in published[0]:
                row["published"], row["published_source"] = published[0][ipc], published[1]
            rows.append(row)
    return rows


def markdown_table(results: dict) -> str:
    grid = results["grid"]
    lines = [f"# distilkit bench: {grid['source']}, preset {grid['preset']}",
             "",
             f"Every set evaluated with the `{grid['eval_preset'] or grid['preset']}` protocol, {grid['runs']} runs "
             f"per seed; seeds {', '.join(map(str, grid['seeds']))}. Accuracy: mean ± std over all runs of all seeds.",
             "",
             "| method | IPC | test accuracy % | published % | distill wall s | s/iteration | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for row in summarize(results):
        acc = f"{row['mean']:.2f} ± {row['std']:.2f} (n={row['n']})" if "mean" in row else "—"
        if row["failed"]:
            acc += f" ({row['failed']} failed: {row['errors'][0]})"
        published = f"{row['published']:.1f} {row['published_source']}" if "published" in row else "—"
        wall = f"{row['wall']:.0f}" if "wall" in row else "—"
        per_it = f"{row['s_per_it']:.3f}" if row.get("s_per_it") is not None else "—"
        peak = f"{row['peak']:.0f}" if row.get("peak") is not None else "—"
        lines.append(f"| {row['method']} | {row['ipc']} | {acc} | {published} | {wall} | {per_it} | {peak} |")
    if is_fashion_mnist(grid["source"]):
        lines += ["", f"Published numbers: REFERENCE.md §4 (ConvNet-3 w128, the standard protocol, full "
                  f"Fashion-MNIST; full real data {FULL_DATA_FMNIST} %). They are comparable only to a "
                  "`--preset standard` bench on the full dataset; other presets and the embedded subset "
                  "differ in network width, iterations and training data."]
    hardware = {c.get("hardware") for c in results["cells"].values() if c.get("hardware")}
    if hardware:
        lines += ["", "Hardware: " + "; ".join(sorted(map(str, hardware)))]
    return "\n".join(lines) + "\n"
