"""The user examples in examples/ run, at the smoke preset on the embedded data (publishing against the
in-repo stand-in for the Hub)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_python_api_example(tmp_path):
    out = run("python_api.py", "--preset", "smoke", "--ipc", "1", "--runs", "1", "--out", "set", cwd=tmp_path)
    assert "float32 images (normalized pixel space)" in out and "[recognition]" in out
    assert "saved set: dm IPC 1, 1 evaluation(s), audits pixels, recognition" in out
    assert sorted(json.loads((tmp_path / "set" / "audit" / "report.json").read_text())["audits"]) == \
        ["pixels", "recognition"]


def test_distill_audit_publish_example(tmp_path, monkeypatch):
    from hub_server import FakeHub
    from test_hub import SECRET, _point_clients_at

    args = ("--preset", "smoke", "--ipc", "1", "--runs", "1", "--audits", "pixels")
    out = run("distill_audit_publish.py", *args, "--out", "local", cwd=tmp_path)
    assert "wrote local with 1 audit(s)" in out and "not published" in out
    server = FakeHub().start()
    try:
        server.write_tokens = {SECRET}
        _point_clients_at(monkeypatch, server.url)  # the environment the example's process inherits
        out = run("distill_audit_publish.py", *args, "--out", "pushed", "--repo", "distilkit-tests/example",
                  "--config-name", "ipc1", "--token", SECRET, cwd=tmp_path)
        assert "published to hf://datasets/distilkit-tests/example/ipc1" in out
        card = server.read("distilkit-tests/example", "README.md").decode()
        assert "pixels" in card and SECRET not in card
        assert server.read("distilkit-tests/example", "ipc1/audit/report.json")
    finally:
        server.stop()


def test_compare_example(tmp_path):
    out = run("compare.py", "--methods", "dm,random", "--ipc", "1", "--preset", "smoke", "--out", "cmp", cwd=tmp_path)
    assert out.count("distilled only") == 2 and (tmp_path / "cmp" / "README.md").is_file()
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["preset"] == "smoke"
