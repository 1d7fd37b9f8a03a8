"""Bad input across every command: one ``error: ...`` line on stderr, exit status 2, no traceback, and not
one file under the working folder created, changed or removed (issue 21, input validation).

Each case runs in-process (click's CliRunner) in a fresh folder holding whatever it needs: a tiny
distilled set, one with NaN pixels, small real sources (one class, an empty ClassLabel class, three
images per class, a corrupt parquet file). Validation must fail before any training, so the module
stays fast; the SIGINT case alone needs a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import write_image_dataset

from distilkit.cli import audit, bench, cli, distill, evaluate, experts, info, methods, publish, verify  # noqa: F401
from distilkit.config import parse_key_values, resolve_distill_config
from distilkit.data.pixel_space import PixelSpace
from distilkit.distilled import DATA_FILE, DistilledSet
from distilkit.errors import DistilkitError


def _set(images: torch.Tensor | None = None, evaluation: list[dict] | None = None) -> DistilledSet:
    generator = torch.Generator().manual_seed(0)
    return DistilledSet(images=images if images is not None else torch.rand(6, 1, 8, 8, generator=generator),
                        labels=torch.arange(3).repeat_interleave(2), class_names=["a", "b", "c"],
                        pixel_space=PixelSpace("raw", [0.5], [0.25], None), method="random", ipc=2,
                        config={"source": {"source": "embedded"}}, source={"id": "embedded:fashion_mnist"},
                        provenance={"seed": 0}, evaluation=evaluation or [])


def _nan_set(folder: Path) -> None:
    """A valid set whose parquet then gets 3 NaN pixels and 1 infinite one (as a damaged file would)."""
    _set().save(folder)
    images = torch.rand(6, 1, 8, 8)
    images[0, 0, 0, :3] = float("nan")
    images[1, 0, 2, 2] = float("inf")
    _set(images).to_dataset().to_parquet(str(folder / DATA_FILE))


def _parquet(path: Path, labels: list[int], names: list[str] | None = None) -> None:
    from datasets import ClassLabel, Dataset, Features, Image, Value
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    images = [PILImage.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L") for _ in labels]
    label = ClassLabel(names=names) if names else Value("int64")
    Dataset.from_dict({"image": images, "label": labels},
                      features=Features({"image": Image(), "label": label})).to_parquet(str(path))


BUILDERS = {
    "set": lambda tmp: _set().save(tmp / "set"),
    "nanset": lambda tmp: _nan_set(tmp / "nanset"),
    "blankclaim": lambda tmp: _set(evaluation=[{"model": "", "preset": "smoke", "runs": 1, "mean": 0.5,
                                                "std": 0.0, "seed": 0}]).save(tmp / "blankclaim"),
    "toy": lambda tmp: write_image_dataset(tmp / "toy", n_per_class=3, size=8, mode="L"),
    "single": lambda tmp: _parquet(tmp / "single.parquet", [0] * 8),
    "emptycls": lambda tmp: _parquet(tmp / "emptycls.parquet", [0] * 4 + [2] * 4, ["cat", "dog", "fox"]),
    "onecls": lambda tmp: _parquet(tmp / "onecls.parquet", [1] * 8, ["cat", "dog"]),
    "corrupt": lambda tmp: (tmp / "corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1"),
    "ipc_one": lambda tmp: (tmp / "run.yaml").write_text("method: random\nipc: one\npreset: smoke\n"),
    "seed_float": lambda tmp: (tmp / "seed.yaml").write_text("seed: 1.5\n"),
    "source_list": lambda tmp: (tmp / "src.yaml").write_text("source:\n  image_size: [8]\n"),
}

SMOKE = ["--preset", "smoke"]
TOY = ["--source", "toy", "--ipc", "1", *SMOKE]  # three images per class: every batch_real above is larger

CASES = [
    # --- distill: --arg values against the type and range of the method's defaults
    ("distill-iterations-abc", [], ["distill", *SMOKE, "--arg", "iterations=abc"], "iterations must be an integer"),
    ("distill-iterations-float", [], ["distill", *SMOKE, "--arg", "iterations=2.5"], "must be an integer, got 2.5"),
    ("distill-iterations-negative", [], ["distill", *SMOKE, "--arg", "iterations=-5"], "must not be negative"),
    ("distill-lr-text", [], ["distill", *SMOKE, "--arg", "lr_images=fast"], "lr_images must be a number"),
    ("distill-lr-nan", [], ["distill", *SMOKE, "--arg", "lr_images=.nan"], "must be a finite number"),
    ("distill-batch-real-zero", [], ["distill", *SMOKE, "--arg", "batch_real=0"], "batch_real must be >= 1"),
    ("distill-dsa-maybe", [], ["distill", *SMOKE, "--arg", "dsa=maybe"], "dsa must be true or false"),
    ("distill-empty-value", [], ["distill", *SMOKE, "--arg", "model="], "has no value"),
    ("distill-empty-key", [], ["distill", *SMOKE, "--arg", "=3"], "no key"),
    ("distill-chunk-zero", [], ["distill", *SMOKE, "--arg", "real_chunk=0"], "real_chunk must be >= 1"),
    ("distill-label-confidence", [], ["distill", *SMOKE, "--method", "krr", "--arg", "label_confidence=1.5"],
     "between 0 and 1"),
    ("distill-label-confidence-below-uniform", [], ["distill", *SMOKE, "--method", "bptt", "--arg",
                                                    "label_confidence=0.05"], "between 1/K = 0.1 and 1"),
    # --- distill: model names, and methods that need embed()
    ("distill-model-unknown", [], ["distill", *SMOKE, "--method", "dc", "--arg", "model=convnet-q3"], "unknown model"),
    ("distill-model-depth-zero", [], ["distill", *SMOKE, "--arg", "model=convnet-d0"], "unknown model"),
    ("distill-dm-timm", [], ["distill", *SMOKE, "--arg", "model=timm/resnet18"], "needs a ConvNet model"),
    ("distill-cafe-timm", [], ["distill", *SMOKE, "--method", "cafe", "--arg", "model=timm/resnet18"],
     "needs a ConvNet"),
    ("distill-krr-timm", [], ["distill", *SMOKE, "--method", "krr", "--arg", "model=timm/resnet18"], "needs a ConvNet"),
    ("distill-herding-timm", [], ["distill", *SMOKE, "--method", "herding", "--arg", "model=timm/resnet18"],
     "needs a ConvNet"),
    ("distill-kcenter-timm", [], ["distill", *SMOKE, "--method", "kcenter", "--arg", "model=timm/resnet18"],
     "needs a ConvNet"),
    # --- distill: run values and config files
    ("distill-config-ipc-one", ["ipc_one"], ["distill", "--config", "run.yaml"], "ipc must be an integer, got 'one'"),
    ("distill-config-seed-float", ["seed_float"], ["distill", "--config", "seed.yaml"], "seed must be an integer"),
    ("distill-config-source-list", ["source_list"], ["distill", "--config", "src.yaml"], "image_size must be"),
    ("distill-image-size-zero", [], ["distill", *SMOKE, "--image-size", "0"], "--image-size must be between 1"),
    ("distill-ipc-zero", [], ["distill", *SMOKE, "--ipc", "0"], "--ipc must be at least 1"),
    ("distill-ipc-text", [], ["distill", "--ipc", "abc"], "'abc' is not a valid integer"),
    ("distill-unknown-flag", [], ["distill", "--ipcs", "3"], "No such option"),
    ("distill-pixel-space", [], ["distill", "--pixel-space", "lab"], "Invalid value for '--pixel-space'"),
    # --- distill: the source
    ("distill-swapped-columns", ["toy"], ["distill", *TOY, "--image-column", "label", "--label-column", "image"],
     "swapped"),
    ("distill-same-column", ["toy"], ["distill", *TOY, "--image-column", "image", "--label-column", "image"],
     "are both 'image'"),
    ("distill-dm-batch-real", ["toy"], ["distill", *TOY, "--method", "dm"], "dm: batch_real 8 exceeds the smallest"),
    ("distill-cafe-batch-real", ["toy"], ["distill", *TOY, "--method", "cafe"], "cafe: batch_real 8 exceeds"),
    ("distill-krr-batch-real", ["toy"], ["distill", *TOY, "--method", "krr"], "krr: batch_real 4 exceeds"),
    ("distill-bptt-batch-real", ["toy"], ["distill", *TOY, "--method", "bptt"], "bptt: batch_real 4 exceeds"),
    ("distill-dc-batch-real", ["toy"], ["distill", *TOY, "--method", "dc"], "dc: batch_real 8 exceeds"),
    ("distill-single-class", ["single"], ["distill", "--source", "single.parquet", *SMOKE, "--ipc", "1"],
     "classification needs at least 2"),
    ("distill-empty-classes", ["emptycls"], ["distill", "--source", "emptycls.parquet", *SMOKE, "--ipc", "1"],
     "--drop-empty-classes"),
    ("distill-drop-leaves-one", ["onecls"], ["distill", "--source", "onecls.parquet", "--drop-empty-classes",
                                             *SMOKE, "--ipc", "1"], "needs at least 2"),
    ("distill-corrupt-source", ["corrupt"], ["distill", "--source", "corrupt.parquet", *SMOKE], "cannot load source"),
    # --- evaluate
    ("evaluate-trailing-comma", ["set"], ["evaluate", "set", "--models", "convnet,"], "empty model name"),
    ("evaluate-only-comma", ["set"], ["evaluate", "set", "--models", ","], "no model names"),
    ("evaluate-unknown-model", ["set"], ["evaluate", "set", "--models", "convnet,resnet"], "unknown model 'resnet'"),
    ("evaluate-unknown-timm", ["set"], ["evaluate", "set", "--models", "timm/not_a_model_xyz"], "unknown timm model"),
    ("evaluate-nan-set", ["nanset"], ["evaluate", "nanset", *SMOKE], "4 NaN or infinite pixel values"),
    ("evaluate-runs-zero", ["set"], ["evaluate", "set", "--runs", "0"], "Invalid value for '--runs'"),
    # --- info
    ("info-nan-set", ["nanset"], ["info", "nanset"], "NaN or infinite pixel values"),
    ("info-json-nan-set", ["nanset"], ["info", "nanset", "--json"], "NaN or infinite pixel values"),
    # --- audit
    ("audit-seeds-text", ["set"], ["audit", "set", "--preset", "smoke", "--arg", "mixing.seeds=abc"],
     "seeds must be an integer"),
    ("audit-seeds-zero", ["set"], ["audit", "set", "--preset", "smoke", "--arg", "mixing.seeds=0"],
     "seeds must be >= 1"),
    ("audit-panel-model", ["set"], ["audit", "set", "--arg", "recognition.panel=[convnet, nope]"], "unknown model"),
    ("audit-protocol-key", ["set"], ["audit", "set", "--arg", "mixing.protocol={speed: 3}"], "unknown key(s)"),
    ("audit-panel-epochs-length", ["set"], ["audit", "set", "--arg", "recognition.epochs=[1, 2, 3, 4, 5, 6, 7]"],
     "panel and epochs must have the same length"),
    ("audit-loo-strategy", ["set"], ["audit", "set", "--only", "mixing", "--arg", "influence.strategy=fast"],
     "unknown strategy 'fast'"),
    ("audit-tolerance-nan", ["set"], ["audit", "set", "--arg", "agreement.tolerance=.inf"], "finite number"),
    ("audit-nan-set", ["nanset"], ["audit", "nanset", "--preset", "smoke", "--only", "pixels"], "NaN or infinite"),
    # --- publish, verify
    ("publish-nan-set", ["nanset"], ["publish", "nanset", "user/name"], "NaN or infinite pixel values"),
    ("verify-nan-set", ["nanset"], ["verify", "nanset"], "NaN or infinite pixel values"),
    ("verify-blank-claim", ["blankclaim"], ["verify", "blankclaim"], "empty model name"),
    # --- methods
    ("methods-preset", [], ["methods", "dm", "--preset", "nonsense"], "unknown preset 'nonsense'"),
    ("methods-ipc-zero", [], ["methods", "dm", "--ipc", "0"], "--ipc must be an integer of at least 1"),
    ("methods-unknown", [], ["methods", "nope"], "unknown method 'nope'"),
    # --- experts
    ("experts-model", [], ["experts", "--preset", "smoke", "--model", "convnet-x"], "unknown model"),
    ("experts-count", [], ["experts", "--preset", "smoke", "--num-experts", "0"], "num_experts must be >= 1"),
    ("experts-single-class", ["single"], ["experts", "--source", "single.parquet", "--preset", "smoke"],
     "needs at least 2"),
    # --- bench: checked before OUT is created
    ("bench-missing-source", [], ["bench", "--source", "./no/such", "--out", "b"], "does not exist"),
    ("bench-ipc-zero", [], ["bench", "--ipc", "0", "--out", "b"], "--ipc values must be at least 1"),
    ("bench-corrupt-source", ["corrupt"], ["bench", "--source", "corrupt.parquet", "--out", "b"], "cannot load"),
    ("bench-arg", [], ["bench", "--methods", "dm", "--arg", "iterations=abc", "--out", "b"], "must be an integer"),
    ("bench-preset", [], ["bench", "--preset", "fast", "--out", "b"], "unknown preset 'fast'"),
    ("bench-unknown-arg", [], ["bench", "--methods", "random", "--arg", "x=1", "--out", "b"],
     "unknown option(s) for method 'random'"),
    # --- audits
    ("audits-extra-argument", [], ["audits", "pixels"], "unexpected extra argument"),
]


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> the sha256 of its content ('dir' for folders)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(("builders", "args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_one_line_and_nothing_changes(builders, args, message, tmp_path, monkeypatch):
    for name in builders:
        BUILDERS[name](tmp_path)
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    result = CliRunner().invoke(cli, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert tree(tmp_path) == before


def test_at_least_forty_cases_over_every_command():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    commands = {c[2][0] for c in CASES}
    assert commands >= {"distill", "evaluate", "info", "audit", "publish", "verify", "methods", "experts", "bench",
                        "audits"}


def test_drop_empty_classes_remaps_labels_and_records_them(tmp_path, monkeypatch):
    BUILDERS["emptycls"](tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["distill", "--source", "emptycls.parquet", "--drop-empty-classes", "--method",
                                      "random", *SMOKE, "--ipc", "1", "--out", "o"])
    assert result.exit_code == 0, result.output
    dset = DistilledSet.load(tmp_path / "o")
    assert dset.class_names == ["cat", "fox"] and sorted(dset.labels.tolist()) == [0, 1]
    assert dset.source["dropped_classes"] == ["dog"] and dset.config["source"]["drop_empty_classes"] is True


def test_non_finite_set_is_not_saved_and_json_writers_write_null(tmp_path):
    from distilkit import jsonio

    images = torch.rand(6, 1, 8, 8)
    images[2, 0, 1, 1] = float("nan")
    with pytest.raises(DistilkitError, match="1 NaN or infinite pixel values"):
        _set(images).save(tmp_path / "o")
    assert not (tmp_path / "o").exists() and not list(tmp_path.iterdir())
    text = jsonio.dumps({"loss": [1.0, float("nan"), float("inf")], "x": np.float32("nan"), "ok": 2.5})
    assert json.loads(text) == {"loss": [1.0, None, None], "x": None, "ok": 2.5}
    with pytest.raises(ValueError):  # a non-finite value that slips past finite() fails loudly instead
        json.dumps(float("nan"), allow_nan=False)


def test_option_checks_accept_what_the_defaults_allow():
    from distilkit.audit import get_audit
    from distilkit.methods import get_method

    cfg = get_method("dm").resolve("smoke", 1, {"iterations": 3, "lr_images": 2, "real_chunk": 16, "dsa": False,
                                                "model": "convnet-w8-d2"})
    assert cfg["lr_images"] == 2.0 and isinstance(cfg["lr_images"], float) and cfg["real_chunk"] == 16
    assert get_method("dc").resolve("smoke", 1, {"model": "timm/resnet18"})["model"] == "timm/resnet18"  # no embed
    audit_cfg = get_audit("recognition").resolve("smoke", {"panel": ["convnet-w8-d2", "convnet"], "epochs": [1, 2]})
    assert audit_cfg["panel"] == ["convnet-w8-d2", "convnet"]
    assert get_audit("agreement").resolve("smoke", {"test_subsample": 40})["test_subsample"] == 40
    # YAML 1.1 reads 1e-5 (no dot) as a string: a float option takes it as the number it means
    assert get_method("mtt").resolve("smoke", 1, parse_key_values(("lr_lr=1e-5",)))["lr_lr"] == 1e-5


def test_config_file_takes_scientific_notation(tmp_path):
    (tmp_path / "run.yaml").write_text("zca_eps: 1e-3\nsource:\n  holdout_fraction: 2e-1\n")
    cfg = resolve_distill_config(tmp_path / "run.yaml")
    assert cfg.zca_eps == 1e-3 and cfg.source.holdout_fraction == 0.2


def test_sigint_exits_130_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "distilkit", "distill", *SMOKE, "--ipc", "1", "--out", str(out),
                             "--arg", "iterations=100000", "--arg", "checkpoint_every=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    checkpoint = tmp_path / ".o.checkpoint"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    lines = [line for line in stderr.splitlines() if line.strip()]  # progress bars (\r) come before it
    assert proc.returncode == 130, stderr
    assert lines[-1] == "error: interrupted" and sum(line.startswith("error") for line in lines) == 1, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr and "Aborted" not in stderr
    assert not out.exists()
