"""The in-memory Python API (README "Python API"): the snippet end to end on the embedded data at the
smoke preset, every kind of source ``distill`` takes, nothing written by library calls, no process-wide
state changed, and registries that replace a re-registered method or audit with a warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import tree_digest

from distilkit.errors import DistilkitError

SMOKE = {"method": "dm", "ipc": 2, "preset": "smoke"}


@pytest.fixture
def fake_hub(monkeypatch):
    from hub_server import FakeHub
    from test_hub import SECRET, _point_clients_at

    server = FakeHub().start()
    server.write_tokens = {SECRET}
    _point_clients_at(monkeypatch, server.url)
    yield server, SECRET
    server.stop()


@pytest.fixture(scope="module")
def from_string(accelerator):
    """The smoke set of the source string "embedded": what every other kind of the same source must give."""
    from distilkit import distill

    return distill("embedded", **SMOKE, accelerator=accelerator)


def decoded_cache_files() -> set[str]:
    from distilkit.data.sources import cache_dir

    folder = cache_dir() / "decoded"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_the_readme_snippet_runs_in_memory(tmp_path, monkeypatch, accelerator, fake_hub):
    """distill -> save, evaluate, push_to_hub -> audit -> load_set, and only save/report.save write."""
    from distilkit import AuditReport, DistilledSet, audit, distill, load_set

    server, token = fake_hub
    monkeypatch.chdir(tmp_path)
    dset = distill("embedded", method="dm", ipc=10, preset="smoke", accelerator=accelerator)
    assert isinstance(dset, DistilledSet) and tuple(dset.images.shape) == (100, 1, 28, 28)
    assert dset.config["out"] is None and dset.config["source"]["source"] == "embedded"
    assert list(tmp_path.iterdir()) == []  # no set folder, no checkpoint, no lock

    out = dset.save("out/")
    results = dset.evaluate(runs=5, preset="smoke", accelerator=accelerator)
    assert len(results[0]["accuracies"]) == 5 and dset.evaluation == results  # recorded in memory ...
    assert DistilledSet.load(out).evaluation == []  # ... not in the folder saved before
    published = dset.push_to_hub("distilkit-tests/api-set", token=token)
    assert published.repo_id == "distilkit-tests/api-set"
    card = server.read("distilkit-tests/api-set", "README.md").decode()
    assert "distilkit:" in card and str(tmp_path) not in card

    before = tree_digest(tmp_path)
    report = audit(dset, only=["recognition"], preset="smoke", accelerator=accelerator)
    assert isinstance(report, AuditReport) and tree_digest(tmp_path) == before  # the audit wrote nothing
    assert set(report.summary) == {"recognition"} and report.verdicts["recognition"]
    assert report.figures and all(png.startswith(b"\x89PNG") for png in report.figures.values())
    assert "recognition" in report.to_markdown()
    report.save(out)
    saved = json.loads((out / "audit" / "report.json").read_text())
    assert saved["audits"]["recognition"]["summary"] == json.loads(json.dumps(report.summary["recognition"]))
    assert all((out / path).read_bytes() == png for path, png in report.figures.items())
    assert "recognition" in DistilledSet.load(out).card_extra["audits"]

    for ref in ("distilkit-tests/api-set", "hf://datasets/distilkit-tests/api-set", "out"):
        loaded = load_set(ref)
        assert torch.equal(loaded.images, dset.images) and torch.equal(loaded.labels, dset.labels), ref


def test_report_save_refuses_a_folder_that_is_not_a_set(tmp_path):
    from distilkit.audit._report import AuditReport

    with pytest.raises(DistilkitError, match="not a distilkit set folder"):
        AuditReport({}).save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_audit_options_fail_before_any_work(smoke_set):
    from distilkit import audit

    with pytest.raises(DistilkitError, match="unknown audit 'nope'"):
        audit(smoke_set, only=["nope"], preset="smoke")
    with pytest.raises(DistilkitError, match="unknown preset 'nonsense'"):
        audit(smoke_set, only=["pixels"], preset="nonsense")


def test_distill_from_a_dataset_dict_equals_the_loaded_source(from_string, accelerator):
    """The embedded data handed over as a DatasetDict gives the very set the source string gives; the
    in-memory dataset's decoded images are not cached."""
    import datasets

    from distilkit import distill
    from distilkit.data.sources import EMBEDDED_DIR

    cached = decoded_cache_files()
    dset = distill(datasets.load_dataset(str(EMBEDDED_DIR)), **SMOKE, accelerator=accelerator)
    assert torch.equal(dset.images, from_string.images) and torch.equal(dset.labels, from_string.labels)
    assert dset.source["id"] == "memory:fashion_mnist" and dset.source["test"]["split"] == "test"
    assert decoded_cache_files() == cached


def test_distill_from_a_dataset_carves_its_test_split_and_audits_with_it(accelerator):
    import datasets

    from distilkit import audit, distill
    from distilkit.data.sources import EMBEDDED_DIR

    train = datasets.load_dataset(str(EMBEDDED_DIR), split="train").shuffle(seed=0).select(range(600))
    dset = distill(train, **SMOKE, accelerator=accelerator, source_options={"holdout_fraction": 0.2})
    assert dset.images.shape[0] == 20 and dset.source["test"]["carved"] and dset.source["test"]["fraction"] == 0.2
    with pytest.raises(DistilkitError, match="held in memory"):  # the card cannot name an in-memory source
        dset.evaluate(runs=1, preset="smoke", accelerator=accelerator)
    results = dset.evaluate(runs=1, preset="smoke", source=train, accelerator=accelerator)
    assert "(carved)" in results[0]["test_set"]
    report = audit(dset, only=["pixels"], preset="smoke", source=train, accelerator=accelerator)
    assert report.summary["pixels"]


def test_distill_from_real_data_equals_the_loaded_source(embedded_real, from_string, accelerator):
    """A RealData (here in the normalised space) gives the source string's set; re-expressed in another
    pixel space it matches load_real's data there."""
    from distilkit import distill
    from distilkit.data.sources import SourceConfig, in_pixel_space, load_real

    dset = distill(embedded_real, **SMOKE, accelerator=accelerator)
    assert torch.equal(dset.images, from_string.images)
    assert dset.source == embedded_real.info and dset.config["source"]["source"] == "memory:embedded:fashion_mnist"
    zca = in_pixel_space(embedded_real, "zca", 0.1)
    loaded = load_real(SourceConfig(), "zca", 0, 0.1)
    assert torch.equal(zca.pixel_space.zca.matrix, loaded.pixel_space.zca.matrix)
    assert in_pixel_space(embedded_real, "normalized") is embedded_real
    with pytest.raises(DistilkitError, match="source_options"):
        distill(embedded_real, **SMOKE, source_options={"split": "train"})


def test_distill_checks_its_arguments_before_loading(tmp_path):
    from distilkit import distill

    with pytest.raises(DistilkitError, match="unknown source option"):
        distill("embedded", **SMOKE, source_options={"colour": "red"})
    with pytest.raises(DistilkitError, match="unknown option"):
        distill("embedded", **SMOKE, method_args={"iteration": 3})
    with pytest.raises(DistilkitError, match="unknown preset"):
        distill("embedded", method="dm", ipc=2, preset="fast")


def test_checkpoints_only_when_asked(tmp_path, from_string, accelerator):
    """``checkpoint_dir`` writes the run's checkpoints; resuming from the last one gives the same set."""
    from distilkit import distill

    dset = distill("embedded", **SMOKE, checkpoint_dir=tmp_path / "ckpt", accelerator=accelerator)
    assert (tmp_path / "ckpt" / "state.json").is_file() and torch.equal(dset.images, from_string.images)
    resumed = distill("embedded", **SMOKE, checkpoint_dir=tmp_path / "ckpt", resume=True, accelerator=accelerator)
    assert torch.equal(resumed.images, dset.images)


def test_library_calls_leave_the_process_alone(tmp_path):
    """In a fresh interpreter: distill, save, evaluate and audit change no environment variable, no
    matplotlib backend, never touch pyplot, and never call the process-wide settings."""
    script = textwrap.dedent("""
        import os, sys
        import torch._dynamo  # torch sets TORCHINDUCTOR_CACHE_DIR when it first loads this: not distilkit's doing
        import matplotlib
        matplotlib.use("svg")
        before = dict(os.environ)

        import distilkit.hub.repo as repo
        import distilkit.runtime as runtime

        def refuse(*args):
            raise AssertionError("a library call changed a process-wide setting")

        runtime.tune_cpu_allocator = runtime.configure_process = repo.configure_hub_http = refuse
        from distilkit import audit, distill
        dset = distill("embedded", method="dm", ipc=1, preset="smoke")
        dset.save(sys.argv[1])
        dset.evaluate(runs=1, preset="smoke")
        audit(dset, only=["pixels"], preset="smoke")
        changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
        assert not changed, changed
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
        print("unchanged")
    """)
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "set")], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}, timeout=600)
    assert done.returncode == 0 and "unchanged" in done.stdout, done.stderr[-3000:]


def test_the_cli_entry_makes_the_process_settings(monkeypatch):
    from click.testing import CliRunner

    import distilkit.runtime as runtime
    from distilkit.cli import cli, methods  # noqa: F401  (register)

    calls = []
    monkeypatch.setattr(runtime, "configure_process", lambda: calls.append(True))
    assert CliRunner().invoke(cli, ["methods"]).exit_code == 0
    assert calls == [True]


def test_public_names_resolve_and_audit_is_callable_as_the_api():
    """Every exported name resolves; ``distilkit.audit`` is both the subpackage (dotted names, monkeypatch
    paths) and, called, the API function, before and after its modules are imported."""
    import importlib

    import distilkit

    for name in distilkit.__all__:
        assert getattr(distilkit, name) is not None, name
    from distilkit import audit

    importlib.import_module("distilkit.audit._report")
    from distilkit import audit as again

    assert again is audit is sys.modules["distilkit.audit"] and callable(audit)
    assert audit.list_audits() == distilkit.list_audits() and audit._report.AuditReport is distilkit.AuditReport
    with pytest.raises(DistilkitError, match="unknown audit"):  # the call reaches distilkit.api.audit
        audit("no-such-folder", only=["nope"])


def test_registering_a_method_or_an_audit_twice_replaces_it_with_a_warning():
    """A notebook cell that registers run twice: the second definition wins, with a warning each."""
    import warnings

    from distilkit.audit import get_audit, register_audit
    from distilkit.audit._registry import _AUDITS
    from distilkit.methods import get_method, register_method
    from distilkit.methods._registry import _REGISTRY

    def first(*args):
        raise AssertionError("replaced")

    def second(*args):
        return None

    def register(fn) -> None:
        register_method("api-test", family="selection", summary="test", defaults={})(fn)
        register_audit("api-test", question=1, summary="test", defaults={})(fn)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the first registration is silent
            register(first)
        with pytest.warns(UserWarning, match="already registered") as caught:
            register(second)
        assert len(caught) == 2 and all(Path(w.filename) == Path(__file__) for w in caught)
        assert get_method("api-test").fn is second and get_audit("api-test").fn is second
    finally:
        _REGISTRY.remove("api-test")
        _AUDITS.remove("api-test")


@pytest.mark.slow
def test_the_readme_snippet_at_the_cpu_preset(tmp_path, monkeypatch, accelerator, fake_hub):
    """The snippet as README writes it (cpu preset, IPC 10): minutes on 2 cores."""
    from distilkit import audit, distill, load_set

    _, token = fake_hub
    monkeypatch.chdir(tmp_path)
    dset = distill("embedded", method="dm", ipc=10, preset="cpu", accelerator=accelerator)
    dset.save("out/")
    dset.evaluate(runs=5, accelerator=accelerator)
    dset.push_to_hub("distilkit-tests/api-cpu", token=token)
    report = audit(dset, only=["recognition"], preset="cpu", accelerator=accelerator)
    report.save("out/")
    assert torch.equal(load_set("distilkit-tests/api-cpu").images, dset.images)
    assert dset.evaluation[0]["mean"] > 0.5
