"""benchmarks/bench_gradient_matching.py runs on tiny settings and reports every figure it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bench_gradient_matching_runs_on_tiny_settings(tmp_path):
    out = tmp_path / "gm.json"
    cmd = [sys.executable, str(BENCHMARKS / "bench_gradient_matching.py"), "--tiny", "--ipcs", "2", "--methods", "dsa",
           "--strategies", "reference,loop,vmap,floor,reference-tuned", "--rounds", "2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    rows, runs = result["rows"], result["runs"]
    strategies = ("reference", "loop", "vmap", "floor", "reference-tuned")
    assert [(r["method"], r["strategy"], r["ipc"]) for r in rows] == [("dsa", s, 2) for s in strategies]
    assert [r["strategy"] for r in runs] == list(strategies) * 2  # alternating rounds
    for r in rows:
        assert 0 < r["matching_s_min"] <= r["matching_s"] and r["peak_rss_mb"] > 0 and r["timed_steps"] == 2
    for r in rows[1:3]:  # distilkit's strategies also time whole iterations; yardstick and floor do not
        assert r["outer_step_s"] > 0 and r["iteration_s_estimate"] == r["outer_step_s"] * r["outer_loop"]
    assert all("outer_step_s" not in rows[i] for i in (0, 3, 4))
    assert [r["tuned_allocator"] for r in rows] == [False, True, True, True, True]  # the yardstick at glibc defaults
    assert "| dsa | 2 | loop |" in done.stdout and "| dsa | 2 | reference |" in done.stdout
    assert "| dsa | 2 | reference-tuned |" in done.stdout and "| vs reference-tuned |" in done.stdout
