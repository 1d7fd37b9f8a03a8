"""benchmarks/bench_methods.py runs on tiny settings and reports every figure it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bench_methods_runs_on_tiny_settings(tmp_path):
    out = tmp_path / "methods.json"
    cmd = [sys.executable, str(BENCHMARKS / "bench_methods.py"), "--preset", "smoke", "--ipc", "1", "--iterations", "1",
           "--methods", "cafe,krr-frepo,krr-rf,bptt", "--steps", "4", "--model", "convnet-w8-d2", "--batch-real", "2",
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    methods = [r for r in rows if r["part"] == "methods"]
    assert [r["variant"] for r in methods] == ["cafe", "krr-frepo", "krr-rf", "bptt"]
    assert all(r["s_per_iteration"] > 0 and r["peak_rss_mb"] > 0 for r in methods)
    memory = [r for r in rows if r["part"] == "bptt_memory"]
    assert [(r["steps"], r["segment"]) for r in memory] == [(4, 0), (4, 2)]
    assert all(r["s_per_outer_step"] > 0 and r["peak_rss_growth_mb"] >= 0 for r in memory)
    assert "| BPTT T" in done.stdout


def test_bench_methods_before_after_runs_each_method_twice(tmp_path):
    out = tmp_path / "methods.json"
    cmd = [sys.executable, str(BENCHMARKS / "bench_methods.py"), "--preset", "smoke", "--ipc", "1", "--iterations", "1",
           "--methods", "dsa", "--before-after", "--steps", "", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["variant"], r["before"]) for r in rows] == [("dsa", True), ("dsa", False)]
    assert all(r["s_per_iteration"] > 0 for r in rows)
    line = next(line for line in done.stdout.splitlines() if line.startswith("| dsa |"))
    assert line.count("x |") == 1  # the speed-up column is filled
