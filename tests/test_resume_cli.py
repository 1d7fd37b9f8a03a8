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

# Iterations per method: long enough to kill the run after a third of it, checkpoints every twelfth
# (a smoke mtt iteration unrolls a student and costs ~1 s on two cores, a dm one ~0.1 s).
ITERATIONS = {"dm": 60, "dc": 36, "dsa": 36, "mtt": 24}


@pytest.mark.parametrize("method", list(ITERATIONS))
def test_sigkill_then_resume_matches_uninterrupted(method, tmp_path):
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    iterations = ITERATIONS[method]
    base = [sys.executable, "-m", "distilkit", "distill", "--preset", "smoke", "--ipc", "2", "--method", method,
            "--arg", f"iterations={iterations}", "--arg", f"checkpoint_every={iterations // 12}"]
    subprocess.run([*base, "--out", "full"], cwd=tmp_path, env=env, check=True, capture_output=True)

    proc = subprocess.Popen([*base, "--out", "cut"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = tmp_path / ".cut.checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text() or "{}").get("step", 0) >= iterations // 3:
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
