"""`distilkit compare`: overlays across sets, one shared curvature run, cached audits reused; the
early-recognition loss and the paper-preset recognition panel that go with it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from distilkit.audit import get_audit
from distilkit.audit._report import run_audits
from distilkit.audit._stats import FAILS, HOLDS, OPEN
from distilkit.cli import cli
from distilkit.cli import compare as compare_cli  # noqa: F401  (registers the command)
from distilkit.compare import compare_sets
from distilkit.config import DistillConfig
from distilkit.pipeline import distill
from distilkit.real_models import RealModelCache

OUTCOMES = {HOLDS, FAILS, OPEN}


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory, accelerator):
    root = tmp_path_factory.mktemp("compare")
    for method in ("dm", "random"):
        distill(DistillConfig(method=method, ipc=1, preset="smoke", out=str(root / method)), accelerator=accelerator)
    return root / "dm", root / "random"


def test_compare_overlays_sets_on_one_curvature_run_and_reuses_audits(two_sets, accelerator, tmp_path):
    dm, random = two_sets
    cache = RealModelCache(root=tmp_path / "models")
    fewer = {"mixing": {"seeds": 1}}  # keeps the test short; the outcome is then always inconclusive
    run_audits(dm, only=["mixing"], preset="smoke", accelerator=accelerator, cache=cache,
               overrides=fewer)  # already audited
    out = tmp_path / "cmp"
    result = compare_sets([dm, random], out, preset="smoke", accelerator=accelerator, cache=cache, overrides=fewer)
    assert result["audits_reused"][str(dm)] == ["mixing"]
    assert result["audits_run"][str(dm)] == ["agreement", "early-recognition"]
    assert result["audits_run"][str(random)] == ["mixing", "agreement", "early-recognition"]
    curvature = result["curvature"]
    assert curvature["iterations"] == [0, 2, 4] and len(curvature["sets"]) == 2
    assert all(len(trace) == 3 for trace in [curvature["real"], *curvature["sets"]])
    assert [row["method"] for row in result["rows"]] == ["dm", "random"]
    assert result["rows"][0]["mixing_small_k"]["outcome"] == "inconclusive at this budget"  # one seed
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["rows"][1]["set"] == result["rows"][1]["set"]
    page = (out / "README.md").read_text()
    for figure in ("mixing.png", "agreement.png", "curvature.png", "early_recognition.png"):
        assert (out / figure).stat().st_size > 0 and f"]({figure})" in page
    assert "| random ipc1 (random) |" in page
    for row in result["rows"]:  # every verdict of the table carries its interval or test
        assert row["early_recognition_test"]["ci"] is not None
        assert row["curvature_outcome"] in OUTCOMES and row["curvature_tests"][0]["ci"] is not None

    # the shared run is the curvature audit's run: each set's curve is the one its own audit measures
    run_audits(dm, only=["curvature"], preset="smoke", accelerator=accelerator, cache=cache)
    table = json.loads((dm / "audit" / "report.json").read_text())["audits"]["curvature"]["tables"][0]
    audited = [row[table["columns"].index("distilled trace")] for row in table["rows"]]
    assert audited == [round(v, 3) for v in curvature["sets"][0]]

    again = RealModelCache(root=tmp_path / "models")
    second = compare_sets([dm, random], tmp_path / "cmp2", preset="smoke", accelerator=accelerator, cache=again,
                          overrides=fewer)
    assert second["audits_run"] == {str(dm): [], str(random): []}  # every audit came from the sets' reports
    assert again.misses == 0
    assert second["curvature"]["sets"] == curvature["sets"]  # the shared run is seeded: same traces

    done = CliRunner().invoke(cli, ["compare", str(dm), str(random), "--preset", "smoke", "--arg", "mixing.seeds=1",
                                    "--out", str(tmp_path / "cmp3")])
    assert done.exit_code == 0, done.output
    assert "dm ipc1 (dm): distilled only" in done.output and "cmp3/README.md" in done.output
    assert json.loads((tmp_path / "cmp3" / "comparison.json").read_text())["audits_run"][str(dm)] == []


def test_compare_cli_errors(two_sets, tmp_path):
    dm, _ = two_sets
    runner = CliRunner()
    bad = runner.invoke(cli, ["compare", str(dm)])
    assert bad.exit_code == 2 and "at least two sets" in bad.stderr
    bad = runner.invoke(cli, ["compare", str(dm), str(dm), "--preset", "smoke"])
    assert bad.exit_code == 2 and "named twice" in bad.stderr
    bad = runner.invoke(cli, ["compare", str(dm), str(dm), "--arg", "pixels.bins=3"])
    assert bad.exit_code == 2 and "does not use: pixels" in bad.stderr
    bad = runner.invoke(cli, ["compare", str(dm), str(dm), "--preset", "huge"])
    assert bad.exit_code == 2 and "unknown preset 'huge'" in bad.stderr


def test_early_recognition_records_the_distilled_loss(two_sets, accelerator, tmp_path):
    import shutil

    folder = tmp_path / "set"
    shutil.copytree(two_sets[1], folder)
    entry = run_audits(folder, only=["early-recognition"], preset="smoke", accelerator=accelerator,
                       cache=RealModelCache(root=tmp_path / "models"))["audits"]["early-recognition"]
    summary, series = entry["summary"], entry["series"]
    assert len(series["distilled_loss"]) == len(series["distilled_accuracy"]) == 7  # iterations 0..6
    assert summary["distilled_loss_min"] == pytest.approx(min(series["distilled_loss"]), abs=1e-4)
    assert summary["distilled_loss_end"] == pytest.approx(series["distilled_loss"][-1], abs=1e-4)
    assert "distilled set's loss" in entry["verdict"]
    assert "distilled-set loss" in (folder / "README.md").read_text()


def test_paper_recognition_panel_has_the_studys_resnet34():
    from distilkit.models import create_model

    cfg = get_audit("recognition").resolve("paper")
    assert cfg["panel"] == ["convnet", "convnet-w16", "timm/resnet18", "timm/resnet34"]
    assert len(cfg["epochs"]) == len(cfg["panel"])
    model = create_model("timm/resnet34", 3, 10, (32, 32))  # builds offline, no weights
    assert 21e6 < sum(p.numel() for p in model.parameters()) < 22e6


def test_push_uploads_the_comparison_folder_to_the_fake_hub(tmp_path, monkeypatch):
    from hub_server import FakeHub
    from test_hub import SECRET, _point_clients_at

    from distilkit.compare import push_comparison
    from distilkit.errors import DistilkitError

    folder = tmp_path / "cmp"
    folder.mkdir()
    (folder / "README.md").write_text("# Comparison\n")
    (folder / "comparison.json").write_text(json.dumps({"rows": []}))
    (folder / "mixing.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "notes.txt").write_text("not uploaded")
    server = FakeHub().start()
    server.write_tokens = {SECRET}
    try:
        _point_clients_at(monkeypatch, server.url)
        sha = push_comparison(folder, "distilkit-tests/comparison", token=SECRET)
        assert len(sha) == 40
        assert json.loads(server.read("distilkit-tests/comparison", "comparison.json")) == {"rows": []}
        assert server.read("distilkit-tests/comparison", "mixing.png").startswith(b"\x89PNG")
        with pytest.raises(DistilkitError) as err:  # a wrong token is one line, not a traceback
            push_comparison(folder, "distilkit-tests/other", token="hf_wrong")
        assert "\n" not in str(err.value)
    finally:
        server.stop()
    with pytest.raises(DistilkitError):
        push_comparison(folder, "not a repo id", token=SECRET)
