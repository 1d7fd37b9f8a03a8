"""``distilkit bench``: a grid of real distill + evaluate processes, resumable, with one table."""

from __future__ import annotations

import json
import subprocess
import sys

from distilkit.bench import BenchGrid, markdown_table, summarize

GRID = ["bench", "--methods", "random,dm", "--ipc", "1", "--seeds", "0,1", "--preset", "smoke", "--runs", "2"]


def bench(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "distilkit", *args], cwd=tmp_path, capture_output=True, text=True)


def test_bench_grid_table_and_resume(tmp_path):
    done = bench(tmp_path, *GRID, "--out", "b")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert sorted(results["cells"]) == ["dm-ipc1-seed0", "dm-ipc1-seed1", "random-ipc1-seed0", "random-ipc1-seed1"]
    for cell in results["cells"].values():
        assert cell["status"] == "done"
        assert len(cell["accuracies"]) == 2 and 0 < cell["accuracy_mean"] < 100
        assert cell["peak_rss_mb"] > 50 and cell["distill_wall_s"] >= 0
    assert results["cells"]["dm-ipc1-seed0"]["s_per_iteration"] > 0  # dm iterates; random does not
    assert results["cells"]["random-ipc1-seed0"]["s_per_iteration"] is None
    table = (tmp_path / "b" / "results.md").read_text()
    assert "| dm | 1 |" in table and "70.0 [R]" in table and "51.4 [R]" in table and "(n=4)" in table
    assert table in done.stdout

    # a second run has nothing left to do: no process is started, the table is the same
    logs = {p.name: p.read_text() for p in (tmp_path / "b" / "logs").iterdir()}
    again = bench(tmp_path, *GRID, "--out", "b")
    assert again.returncode == 0 and {p.name: p.read_text() for p in (tmp_path / "b" / "logs").iterdir()} == logs
    assert (tmp_path / "b" / "results.md").read_text() == table

    changed = bench(tmp_path, *GRID[:-1], "3", "--out", "b")
    assert changed.returncode == 2 and changed.stderr.strip().count("\n") == 0
    assert "different grid" in changed.stderr


def test_bench_records_a_failing_cell_and_retries_it(tmp_path):
    done = bench(tmp_path, "bench", "--methods", "random", "--ipc", "100000", "--preset", "smoke", "--runs", "1",
                 "--out", "b")
    assert done.returncode == 1
    assert "1 cell(s) failed" in done.stderr and "Traceback" not in done.stderr
    cell = json.loads((tmp_path / "b" / "results.json").read_text())["cells"]["random-ipc100000-seed0"]
    assert cell["status"] == "failed" and "larger than the smallest class" in cell["error"]
    assert "failed: --ipc 100000 is larger" in (tmp_path / "b" / "results.md").read_text()


def test_bench_rejects_unknown_method_before_any_work(tmp_path):
    done = bench(tmp_path, "bench", "--methods", "random,nope", "--preset", "smoke", "--out", "b")
    assert done.returncode == 2 and "unknown method 'nope'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "b" / "results.json").exists()


def test_published_numbers_only_for_fashion_mnist():
    grid = BenchGrid(source="some/cifar10", methods=["dm"], ipcs=[10], seeds=[0])
    results = {"grid": grid.__dict__, "cells": {}}
    assert "published" not in summarize(results)[0]
    assert "| dm | 10 | — | — |" in markdown_table(results)
    fmnist = {"grid": {**grid.__dict__, "source": "/usr/share/datasets/fashion-mnist"}, "cells": {}}
    assert summarize(fmnist)[0]["published"] == 83.0
