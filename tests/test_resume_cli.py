"""Kill a real ``distilkit distill`` process with SIGKILL mid-run, resume it, compare bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from distilkit.distilled import DistilledSet

ARGS = ["distill", "--preset", "smoke", "--ipc", "2", "--arg", "iterations=60", "--arg", "checkpoint_every=5"]


@pytest.mark.parametrize("method", ["dm", "dc", "dsa", "mtt"])
def test_sigkill_then_resume_matches_uninterrupted(method, tmp_path):
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    base = [sys.executable, "-m", "distilkit", *ARGS, "--method", method]
    subprocess.run([*base, "--out", "full"], cwd=tmp_path, env=env, check=True, capture_output=True)

    proc = subprocess.Popen([*base, "--out", "cut"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = tmp_path / ".cut.checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text() or "{}").get("step", 0) >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; raise iterations"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut").exists()  # no partial output

    subprocess.run([*base, "--out", "cut", "--resume"], cwd=tmp_path, env=env, check=True, capture_output=True)
    full, cut = DistilledSet.load(tmp_path / "full"), DistilledSet.load(tmp_path / "cut")
    assert torch.equal(full.images, cut.images)
    assert full.history["loss"] == cut.history["loss"]
    assert full.learned_lr == cut.learned_lr
    assert not (tmp_path / ".cut.checkpoint").exists()
