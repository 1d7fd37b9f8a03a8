"""Two CPU processes (torchrun, ACCELERATE_USE_CPU=1) give the one-process answer.

Every method shards its real batch (or its work) across the ranks and all-reduces what the
synthetic images' gradient needs, so the distilled images equal the single-process run up to the
order of floating-point sums; evaluation runs are split across ranks and gathered in order.
Only the main process writes the set.

The workers run one thread each (OMP_NUM_THREADS=1), so the one-process reference runs with one
thread too: the intra-op thread count changes the order of floating-point sums inside a kernel,
and a short unrolled-trajectory run (mtt's smoke preset) turns that 1e-7 noise into 1e-3 within
four iterations, which would hide whatever the process split itself does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from distilkit.config import DistillConfig
from distilkit.distilled import DistilledSet
from distilkit.evaluate import evaluate_folder
from distilkit.methods import list_methods
from distilkit.pipeline import distill

WORKER = Path(__file__).with_name("multiprocess_worker.py")
SELECTION = {"random", "herding", "kcenter"}
REPLICATED = {"mtt"}  # no real data in the loop: every rank runs the whole computation, no all-reduce


@contextmanager
def one_thread() -> Iterator[None]:
    """The workers' intra-op thread count, for the one-process reference runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    methods = [m for m in list_methods() if m not in SELECTION]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
           str(WORKER), str(out), ",".join(methods)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.mark.parametrize("method", [m for m in list_methods() if m not in SELECTION])
def test_two_processes_distill_the_same_set(method, two_process_runs, tmp_path, accelerator):
    with one_thread():
        one = distill(DistillConfig(method=method, ipc=2, preset="smoke", out=str(tmp_path / method)),
                      accelerator=accelerator)
    single, shared = DistilledSet.load(one), DistilledSet.load(two_process_runs / method)
    scale = single.images.abs().max().item()
    # Two processes sum the real batch's contributions in another order; a method that updates with Adam (krr)
    # divides by the square root of tiny second moments, which lifts that float noise to ~3e-5 of the pixel scale
    # in a rare pixel on some CPUs. The bound on the mean difference keeps the comparison tight overall.
    torch.testing.assert_close(shared.images, single.images, atol=1e-4 * scale, rtol=0)
    assert (shared.images - single.images).abs().mean().item() <= 1e-6 * scale
    if method in REPLICATED:
        assert torch.equal(shared.images, single.images)
    assert not torch.equal(single.images, torch.zeros_like(single.images))
    if single.learned_lr is not None:
        assert shared.learned_lr == pytest.approx(single.learned_lr, rel=1e-5)
    if single.soft_labels is not None:
        torch.testing.assert_close(shared.soft_labels, single.soft_labels, atol=1e-5, rtol=1e-4)
    assert shared.history["loss"] == pytest.approx(single.history["loss"], rel=1e-4, abs=1e-6)
    assert not list(two_process_runs.glob(f".{method}*"))  # no checkpoint or temp folder left behind


def test_two_processes_split_evaluation_runs(two_process_runs, tmp_path, accelerator):
    first = sorted(m for m in list_methods() if m not in SELECTION)[0]
    shared = json.loads((two_process_runs / "evaluation.json").read_text())
    assert shared["processes"] == 2
    copy = tmp_path / "set"
    DistilledSet.load(two_process_runs / first).save(copy)
    with one_thread():
        single = evaluate_folder(copy, runs=3, preset="smoke", accelerator=accelerator)
    assert shared["accuracies"] == pytest.approx(single[0]["accuracies"], abs=1e-6)


def test_two_processes_share_the_audits(tmp_path, accelerator):
    """Audits whose work is many independent trainings (leave-one-out models, agreement's model pools,
    mixing and sensitivity runs) split it across 2 processes and report what one process reports."""
    import shutil

    from safetensors.torch import load_file

    from distilkit.audit._report import run_audits

    audits = ["influence", "agreement", "mixing", "sensitivity"]
    one = tmp_path / "one"
    distill(DistillConfig(method="random", ipc=1, preset="smoke", out=str(one)), accelerator=accelerator)
    two = tmp_path / "two"
    shutil.copytree(one, two)
    with one_thread():
        run_audits(one, only=audits, preset="smoke", accelerator=accelerator)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "DISTILKIT_CACHE": str(tmp_path / "cache-two")}  # the pools are built again, by both processes
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "distilkit", "audit", str(two), "--only", ",".join(audits), "--preset", "smoke"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("[Q3] influence:") == 1  # only the main process reports
    single = json.loads((one / "audit" / "report.json").read_text())["audits"]
    shared = json.loads((two / "audit" / "report.json").read_text())["audits"]
    for name in audits:
        for key, value in single[name]["summary"].items():
            if isinstance(value, float):
                assert shared[name]["summary"][key] == pytest.approx(value, abs=1e-4), (name, key)
            else:
                assert shared[name]["summary"][key] == value, (name, key)
    matrix_one = load_file(str(one / "audit" / "influence.safetensors"))["influence"]
    matrix_two = load_file(str(two / "audit" / "influence.safetensors"))["influence"]
    assert matrix_one.shape == (10, 60)
    torch.testing.assert_close(matrix_two, matrix_one, atol=1e-5, rtol=1e-4)
    assert list((tmp_path / "cache-two" / "pools").glob("*.safetensors"))  # the main process cached the pools
