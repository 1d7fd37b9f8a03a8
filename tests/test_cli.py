from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from distilkit.cli import cli, distill, evaluate, info, main, methods  # noqa: F401  # noqa: F401  (register commands)

SMOKE = ["--preset", "smoke", "--ipc", "2"]


@pytest.fixture()
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(cli, list(args), catch_exceptions=False)


def test_distill_evaluate_info_end_to_end(runner, tmp_path):
    result = invoke(runner, "distill", *SMOKE, "--method", "dm", "--seed", "3")
    assert result.exit_code == 0, result.output
    out = tmp_path / "distilled" / "fashion-mnist-dm-ipc2"
    assert (out / "README.md").is_file() and (out / "data" / "train-00000-of-00001.parquet").is_file()
    recipe = (out / "distilkit_recipe.yaml").read_text()
    assert "seed: 3" in recipe and "iterations: 6" in recipe

    result = invoke(runner, "evaluate", str(out), "--runs", "2", "--preset", "smoke")
    assert result.exit_code == 0, result.output
    assert "convnet-w8-d2" in result.output and "±" in result.output
    card = (out / "README.md").read_text()
    assert "| `convnet-w8-d2` | smoke | 2 |" in card
    # re-running replaces the row instead of duplicating it
    invoke(runner, "evaluate", str(out), "--runs", "2", "--preset", "smoke")
    assert (out / "README.md").read_text().count("| `convnet-w8-d2` | smoke |") == 1

    result = invoke(runner, "info", str(out))
    assert result.exit_code == 0 and "dm (IPC 2, 20 images, 10 classes)" in result.output
    result = invoke(runner, "methods")
    assert "dm" in result.output and "herding" in result.output
    assert "iterations: 400" in invoke(runner, "methods", "dm", "--preset", "cpu").output


def test_config_file_and_flags_merge(runner, tmp_path):
    (tmp_path / "run.yaml").write_text("method: random\nipc: 3\nseed: 5\npreset: smoke\n"
                                       "source:\n  source: embedded\n")
    result = invoke(runner, "distill", "--config", "run.yaml", "--ipc", "2", "--out", "o")
    assert result.exit_code == 0, result.output
    recipe = (tmp_path / "o" / "distilkit_recipe.yaml").read_text()
    assert "method: random" in recipe and "ipc: 2" in recipe and "seed: 5" in recipe


def test_same_seed_same_images(runner, tmp_path):
    from distilkit.distilled import DistilledSet

    for out in ("a", "b"):
        assert invoke(runner, "distill", *SMOKE, "--out", out).exit_code == 0
    assert DistilledSet.load(tmp_path / "a").images.equal(DistilledSet.load(tmp_path / "b").images)


BAD_INPUTS = [
    (["distill", "--method", "nope"], "unknown method 'nope'"),
    (["distill", "--preset", "huge"], "unknown preset 'huge'"),
    (["distill", "--source", "./no/such/folder"], "does not exist"),
    (["distill", "--preset", "smoke", "--ipc", "601"], "larger than the smallest class"),
    (["distill", "--preset", "smoke", "--arg", "iteratons=3"], "unknown option(s) for method 'dm'"),
    (["distill", "--preset", "smoke", "--arg", "noequals"], "KEY=VALUE"),
    (["distill", "--config", "missing.yaml"], "not found"),
    (["evaluate", "nothing-here"], "is not a folder"),
    (["info", "foreign"], "not a distilkit set"),
    (["evaluate", "foreign", "--preset", "fast"], "unknown preset 'fast'"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2(runner, tmp_path, args, message):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "README.md").write_text("---\nlicense: mit\n---\n")
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "distilled").exists() or not any((tmp_path / "distilled").iterdir())


def test_dataset_without_label_column(runner, tmp_path):
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage

    img = PILImage.new("L", (8, 8))
    Dataset.from_dict({"image": [img] * 4, "caption": ["x"] * 4},
                      features=Features({"image": Image(), "caption": Value("string")})).to_parquet("d.parquet")
    result = runner.invoke(cli, ["distill", "--source", "d.parquet", "--preset", "smoke"])
    assert result.exit_code == 2 and "has no label column" in result.stderr


def test_non_empty_output_needs_overwrite(runner, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    result = runner.invoke(cli, ["distill", *SMOKE, "--method", "random", "--out", "o"])
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert (tmp_path / "o" / "keep.txt").read_text() == "mine"
    result = runner.invoke(cli, ["distill", *SMOKE, "--method", "random", "--out", "o", "--overwrite"])
    assert result.exit_code == 2 and "not one" in result.stderr  # --overwrite replaces only a distilled set
    assert (tmp_path / "o" / "keep.txt").read_text() == "mine"
    (tmp_path / "o" / "README.md").write_text("---\ndistilkit:\n  method: random\n---\n")
    result = runner.invoke(cli, ["distill", *SMOKE, "--method", "random", "--out", "o", "--overwrite"])
    assert result.exit_code == 0 and not (tmp_path / "o" / "keep.txt").exists()


def test_module_entry_point_and_accelerate_launch(tmp_path):
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    out = subprocess.run([sys.executable, "-m", "distilkit", "methods"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "dm" in out.stdout
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "distilkit", "distill", *SMOKE,
           "--method", "random", "--out", str(tmp_path / "acc")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "acc" / "README.md").is_file()
