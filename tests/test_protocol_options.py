"""The study's exact protocol and the `labels` / `learned_lr` options of evaluate and audits (issue 20, defect 2)."""

from __future__ import annotations

import shutil

import pytest
import torch
from click.testing import CliRunner

from distilkit.distilled import DistilledSet


@pytest.fixture(scope="module")
def soft_set(tmp_path_factory, accelerator):
    """A smoke dm set given soft labels and a learned lr (as bptt/mtt/krr sets carry)."""
    from distilkit.config import DistillConfig
    from distilkit.pipeline import distill

    root = tmp_path_factory.mktemp("protocol")
    out = distill(DistillConfig(method="dm", ipc=2, preset="smoke", out=str(root / "hard")), accelerator=accelerator)
    dset = DistilledSet.load(out)
    dset.soft_labels = torch.nn.functional.one_hot(dset.labels, dset.num_classes).float() * 0.8 + 0.02
    dset.learned_lr = 0.037
    dset.save(root / "soft")
    return root / "soft"


def test_paper_preset_is_the_studys_protocol():
    from distilkit.train import train_preset

    p = train_preset("paper")
    assert (p.labels, p.use_learned_lr, p.lr, p.momentum, p.weight_decay, p.lr_schedule, p.batch_size, p.iterations,
            p.dsa) == ("hard", False, 0.01, 0.9, 0.0, "constant", None, 300, False)
    assert train_preset("cpu").labels == "soft" and train_preset("cpu").use_learned_lr


def test_evaluate_trains_with_the_chosen_labels_and_lr(soft_set, accelerator, monkeypatch):
    import distilkit.evaluate as evaluate

    calls = []

    def fake_train_and_test(images, targets, *args, lr=None, **kwargs):
        calls.append((targets.dtype, lr))
        return 0.5

    monkeypatch.setattr(evaluate, "train_and_test", fake_train_and_test)
    dset = DistilledSet.load(soft_set)
    [paper] = evaluate.evaluate_set(dset, runs=1, preset="paper", models=["convnet-w8-d2"], accelerator=accelerator)
    [smoke] = evaluate.evaluate_set(dset, runs=1, preset="smoke", accelerator=accelerator)
    [mixed] = evaluate.evaluate_set(dset, runs=1, preset="paper", accelerator=accelerator, labels="soft",
                                    learned_lr=True, models=["convnet-w8-d2"])
    assert calls == [(torch.long, None), (torch.float32, 0.037), (torch.float32, 0.037)]
    assert (paper["labels"], paper["learned_lr"], paper["lr"], paper["protocol"]["labels"]) == ("hard", False, 0.01,
                                                                                                 "hard")
    assert (smoke["labels"], smoke["learned_lr"], smoke["lr"]) == ("soft", True, 0.037)
    assert mixed["labels"] == "soft" and mixed["protocol"]["use_learned_lr"] is True
    merged = evaluate.merge_results([paper, smoke], [mixed])
    assert len(merged) == 3  # a different labels/lr choice is a different result, not a replacement


def test_evaluate_cli_flags(soft_set, tmp_path, monkeypatch):
    import distilkit.evaluate as evaluate
    from distilkit.cli import cli
    from distilkit.cli import evaluate as evaluate_cli  # noqa: F401  (registers the command)

    monkeypatch.setattr(evaluate, "train_and_test", lambda *a, **k: 0.5)
    folder = tmp_path / "set"
    shutil.copytree(soft_set, folder)
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "--runs", "1", "--preset", "smoke", "--labels", "hard",
                                      "--no-learned-lr"])
    assert result.exit_code == 0, result.output
    assert "hard labels, lr 0.01" in result.output
    saved = DistilledSet.load(folder).evaluation
    assert saved[-1]["labels"] == "hard" and saved[-1]["protocol"]["use_learned_lr"] is False
    assert "hard labels, lr 0.01" in (folder / "README.md").read_text()
    bad = CliRunner().invoke(cli, ["evaluate", str(folder), "--labels", "fuzzy"])
    assert bad.exit_code == 2


def test_every_training_audit_uses_the_run_wide_labels_and_lr(soft_set, accelerator, tmp_path, monkeypatch):
    """Each audit that trains on the distilled set asks for its targets and lr through the run-wide
    options (hard labels and the protocol's lr by default, the study's protocol; soft and learned
    on request), and the report and card record which were used."""
    from distilkit.audit._report import run_audits
    from distilkit.card import read_card
    from distilkit.real_models import RealModelCache

    asked: list[tuple[str, object]] = []
    original_targets, original_lr = DistilledSet.training_targets, DistilledSet.lr_for

    def targets(self, labels="soft"):
        asked.append(("labels", labels))
        return original_targets(self, labels)

    def lr_for(self, learned_lr):
        asked.append(("learned_lr", learned_lr))
        return original_lr(self, learned_lr)

    monkeypatch.setattr(DistilledSet, "training_targets", targets)
    monkeypatch.setattr(DistilledSet, "lr_for", lr_for)
    folder = tmp_path / "set"
    shutil.copytree(soft_set, folder)
    cache = RealModelCache(root=tmp_path / "models")
    overrides = {"agreement": {"test_subsample": 60}, "mixing": {"ks": [0]},
                 "influence": {"random_real_baseline": False}}
    for labels, learned in ((None, None), ("soft", True)):
        for name in ("agreement", "curvature", "influence", "mixing") + (("sensitivity",) if labels else ()):
            asked.clear()
            report = run_audits(folder, only=[name], preset="smoke", accelerator=accelerator, cache=cache,
                                overrides=overrides, labels=labels, learned_lr=learned)
            expect = ("soft", True) if labels else ("hard", False)
            assert {v for k, v in asked if k == "labels"} == {expect[0]}, name
            if name != "curvature":  # curvature measures the loss, it does not train on the set
                assert {v for k, v in asked if k == "learned_lr"} == {expect[1]}, name
            entry = report["audits"][name]
            assert (entry["labels"], entry["learned_lr"]) == expect
    card = read_card(folder)
    assert card.data["distilkit"]["audits"]["mixing"]["labels"] == "soft"
    assert "soft labels, learned lr" in card.text


def test_evaluate_drops_dsa_flip_on_digit_datasets(soft_set, embedded_real, accelerator, monkeypatch):
    import dataclasses

    import distilkit.evaluate as evaluate
    from distilkit.data.dsa import DEFAULT_STRATEGY, DIGIT_STRATEGY

    strategies = []
    monkeypatch.setattr(evaluate, "train_and_test", lambda *a, **k: strategies.append(a[5].dsa_strategy) or 0.5)
    dset = DistilledSet.load(soft_set)
    evaluate.evaluate_set(dset, runs=1, preset="smoke", accelerator=accelerator)
    digits = dataclasses.replace(embedded_real, info={**embedded_real.info, "id": "ylecun/mnist", "hub_id": None})
    monkeypatch.setattr(evaluate, "load_real", lambda *a, **k: digits)
    evaluate.evaluate_set(dset, runs=1, preset="smoke", accelerator=accelerator)
    assert strategies == [DEFAULT_STRATEGY, DIGIT_STRATEGY]


def test_audit_cli_flags_reach_the_report(soft_set, tmp_path):
    import json

    from distilkit.cli import audit as audit_cli  # noqa: F401  (registers the command)
    from distilkit.cli import cli

    folder = tmp_path / "set"
    shutil.copytree(soft_set, folder)
    runner = CliRunner()
    done = runner.invoke(cli, ["audit", str(folder), "--only", "pixels", "--preset", "smoke", "--labels", "soft",
                               "--learned-lr"])
    assert done.exit_code == 0, done.output
    entry = json.loads((folder / "audit" / "report.json").read_text())["audits"]["pixels"]
    assert (entry["labels"], entry["learned_lr"]) == ("soft", True)
    done = runner.invoke(cli, ["audit", str(folder), "--only", "pixels", "--preset", "paper"])
    entry = json.loads((folder / "audit" / "report.json").read_text())["audits"]["pixels"]
    assert done.exit_code == 0 and (entry["labels"], entry["learned_lr"]) == ("hard", False)
    assert runner.invoke(cli, ["audit", str(folder), "--labels", "fuzzy"]).exit_code == 2
