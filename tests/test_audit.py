from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from distilkit.audit import get_audit, list_audits
from distilkit.audit._report import run_audits
from distilkit.cli import audit as audit_cli  # noqa: F401  (registers the commands)
from distilkit.cli import cli
from distilkit.real_models import RealModelCache


def test_registry_lists_q1_audits():
    assert {"recognition", "pixels", "mixing", "sensitivity"} <= set(list_audits())
    assert all(get_audit(n).question == 1 for n in ("recognition", "pixels", "mixing", "sensitivity"))


@pytest.mark.parametrize("name", list_audits())
def test_each_audit_on_smoke_preset(name, smoke_set, accelerator, tmp_path):
    import shutil

    folder = tmp_path / "set"
    shutil.copytree(smoke_set, folder)
    report = run_audits(folder, only=[name], preset="smoke", accelerator=accelerator)
    entry = report["audits"][name]
    assert entry["question"] == get_audit(name).question and entry["verdict"]
    assert entry["summary"] and all(isinstance(k, str) for k in entry["summary"])
    for figure in entry["figures"]:
        assert (folder / figure).stat().st_size > 0
    for test in entry.get("tests", []):  # what a verdict follows from: an interval or a test, and its outcome
        assert test["outcome"] in ("holds", "does not hold", "inconclusive at this budget")
        assert test["ci"] is not None or test["p"] is not None
    if entry.get("tests"):
        assert entry["tests"][0]["outcome"] in entry["verdict"]
    if name in ("mixing", "sensitivity", "agreement", "influence"):
        assert entry["tests"]


def test_report_schema_card_section_and_partial_rerun(smoke_set, accelerator, tmp_path):
    import shutil

    folder = tmp_path / "set"
    shutil.copytree(smoke_set, folder)
    readme = folder / "README.md"
    readme.write_text(readme.read_text() + "\nA note a human added at the end.\n")
    cache = RealModelCache(root=tmp_path / "models")
    run_audits(folder, only=["pixels", "recognition"], preset="smoke", accelerator=accelerator, cache=cache)
    assert cache.misses == 1 and cache.hits == 0
    first = readme.read_text()
    report = json.loads((folder / "audit" / "report.json").read_text())
    assert set(report) == {"distilkit_version", "created", "set", "source", "model_cache", "audits"}
    assert set(report["audits"]["pixels"]) >= {"question", "config", "summary", "figures", "artifacts"}

    cache2 = RealModelCache(root=tmp_path / "models")
    run_audits(folder, only=["recognition"], preset="smoke", accelerator=accelerator, cache=cache2)
    assert cache2.misses == 0 and cache2.hits == 1  # the real-trained model came from the cache
    text = readme.read_text()
    assert text.count("<!-- distilkit:audit:start -->") == 1
    assert text.endswith("A note a human added at the end.\n")
    before, after = first.split("<!-- distilkit:audit:start -->")[0], text.split("<!-- distilkit:audit:start -->")[0]
    strip_yaml = lambda t: t.split("\n---\n", 1)[1]  # the YAML's audit dates may differ; the body must not
    assert strip_yaml(before) == strip_yaml(after)
    report = json.loads((folder / "audit" / "report.json").read_text())
    assert set(report["audits"]) == {"pixels", "recognition"}  # pixels kept from the first run
    from distilkit.card import read_card

    assert set(read_card(folder).data["distilkit"]["audits"]) == {"pixels", "recognition"}


def test_audit_cli_and_errors(smoke_set, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    listed = runner.invoke(cli, ["audits"])
    assert listed.exit_code == 0 and "Q1  recognition" in listed.output
    bad = runner.invoke(cli, ["audit", str(smoke_set), "--only", "nope"])
    assert bad.exit_code == 2 and "unknown audit 'nope'" in bad.stderr
    bad = runner.invoke(cli, ["audit", str(smoke_set), "--arg", "pixels.bogus=1"])
    assert bad.exit_code == 2 and "unknown option(s) for audit 'pixels'" in bad.stderr
    bad = runner.invoke(cli, ["audit", str(smoke_set), "--preset", "huge", "--only", "pixels"])
    assert bad.exit_code == 2 and "unknown preset 'huge'" in bad.stderr
    import shutil

    shutil.copytree(smoke_set, tmp_path / "s")
    (tmp_path / "s" / "audit").mkdir(exist_ok=True)
    (tmp_path / "s" / "audit" / "report.json").write_text("{not json")
    bad = runner.invoke(cli, ["audit", "s", "--only", "pixels", "--preset", "smoke"])
    assert bad.exit_code == 2 and "is corrupt" in bad.stderr
    (tmp_path / "s" / "audit" / "report.json").unlink()
    ok = runner.invoke(cli, ["audit", "s", "--only", "pixels", "--preset", "smoke", "--arg", "pixels.bins=30"])
    assert ok.exit_code == 0 and "[Q1] pixels:" in ok.output
    report = json.loads((tmp_path / "s" / "audit" / "report.json").read_text())
    assert report["audits"]["pixels"]["config"]["bins"] == 30


def test_original_pixels_inverts_normalisation_and_zca():
    import torch

    from distilkit.audit._common import to_original_pixels
    from distilkit.data.pixel_space import PixelSpace
    from distilkit.data.zca import ZCA

    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (40, 1, 5, 5), generator=gen, dtype=torch.uint8)
    normalized = PixelSpace("normalized", [0.4], [0.3])
    fitted = ZCA.fit(normalized.from_uint8(raw), eps=0.1)
    for space in (normalized, PixelSpace("zca", [0.4], [0.3], fitted), PixelSpace("raw", [0.4], [0.3])):
        torch.testing.assert_close(to_original_pixels(space.from_uint8(raw), space), raw.float() / 255,
                                   atol=1e-4, rtol=1e-4)
