"""benchmarks/bench_mtt.py runs on tiny settings and reports every figure it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bench_mtt_runs_on_tiny_settings(tmp_path):
    out = tmp_path / "mtt.json"
    cmd = [sys.executable, str(BENCHMARKS / "bench_mtt.py"), "--source", "embedded", "--model", "convnet-w8-d2",
           "--ipc", "1", "--steps", "3", "--batch-syn", "4", "--iterations", "1", "--sweep", "2,8", "--device", "cpu",
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["part"], r["memory"]) for r in rows[:2]] == [("iteration", "constant"), ("iteration", "unrolled")]
    assert all(r["s_per_iteration"] > 0 and r["saved_mb"] > 0 and r["peak_rss_growth_mb"] >= 0 for r in rows)
    sweep = {(r["steps"], r["memory"]): r["saved_mb"] for r in rows[2:]}
    assert sorted(sweep) == [(2, "constant"), (2, "unrolled"), (8, "constant"), (8, "unrolled")]
    assert sweep[8, "constant"] == sweep[2, "constant"] and sweep[8, "unrolled"] > 2 * sweep[2, "unrolled"]
    assert "| syn_steps" in done.stdout
