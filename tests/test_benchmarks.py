"""The scripts in benchmarks/ run (on the embedded data, with tiny settings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bench_dm_runs_on_tiny_settings(tmp_path):
    out = tmp_path / "dm.json"
    cmd = [sys.executable, str(BENCHMARKS / "bench_dm.py"), "--source", "embedded", "--ipcs", "1", "--iterations", "1",
           "--warmup", "0", "--batch-real", "8", "--model", "convnet-w8-d2", "--rounds", "2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    rows, runs = result["rows"], result["runs"]
    assert {r["variant"] for r in rows} == {"reference", "loop", "distilkit", "floor"}
    assert all(r["s_per_iteration"] > 0 and r["peak_rss_mb"] > 0 and r["timed_iterations"] == 2 for r in rows)
    assert [r["variant"] for r in runs] == ["reference", "loop", "distilkit", "floor"] * 2  # alternating rounds
    for row in rows:
        times = [t for r in runs if r["variant"] == row["variant"] for t in r["times"]]
        assert row["s_per_iteration_min"] == min(times) <= row["s_per_iteration"] <= max(times)
    by = {r["variant"]: r["s_per_iteration"] for r in rows}
    assert by["floor"] < by["distilkit"]  # the convolutions alone take less than the whole step
    assert "| conv floor s/it | reference / floor |" in done.stdout


def test_bench_curvature_runs_on_tiny_settings(tmp_path):
    out = tmp_path / "curvature.json"
    cmd = [sys.executable, str(BENCHMARKS / "bench_curvature.py"), "--model", "convnet-w8-d2", "--sets", "20",
           "--probes", "2", "--probe-batch", "2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in rows] == ["per-probe", "loop", "vmap"]
    assert all(r["probes"] == 2 and r["s_per_probe"] > 0 for r in rows)
    assert all(abs(r["trace"] - rows[0]["trace"]) <= 1e-4 * abs(rows[0]["trace"]) for r in rows)  # same probes


def test_bench_influence_runs_on_tiny_settings(tmp_path):
    out = tmp_path / "influence.json"
    cmd = [sys.executable, str(BENCHMARKS / "bench_influence.py"), "--model", "convnet-w8-d2", "--images", "20",
           "--models", "2", "--model-chunk", "2", "--iterations", "2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["sequential", "vectorised", "vmap"]
    assert all(r["ms_per_model_step"] > 0 and r["extrapolated_total_s"] > 0 for r in rows)


def test_conv_floor_sees_every_convolution_even_where_the_first_block_folds():
    import torch

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from conv_floor import conv_shapes
    finally:
        sys.path.remove(str(BENCHMARKS))
    from distilkit.models.convnet import ConvNet

    net = ConvNet(1, 10, (28, 28), width=8, depth=3)
    with torch.no_grad():  # the fold is on here; the probe must still find the first convolution
        shapes = [shape for _, shape in conv_shapes(net, (1, 28, 28))]
    assert shapes == [(1, 28, 28), (8, 16, 16), (8, 8, 8)]
