"""Every Q1–Q3 verdict follows from an interval or a test: the report stores them, the card shows them."""

from __future__ import annotations

import json
import shutil

import torch

from distilkit.audit._report import run_audits
from distilkit.audit._stats import FAILS, HOLDS, OPEN, two_sample_test
from distilkit.audit.agreement import match_runs, split_halves
from distilkit.real_models import RealModelCache

OUTCOMES = {HOLDS, FAILS, OPEN}


def test_split_halves_are_disjoint_class_balanced_and_seeded():
    labels = torch.arange(5).repeat_interleave(7)  # 7 per class: 3 to the matching half, 4 to the scoring half
    first, second = split_halves(labels, seed=1)
    assert set(first.tolist()).isdisjoint(second.tolist())
    assert sorted(first.tolist() + second.tolist()) == list(range(35))
    assert torch.bincount(labels[first]).tolist() == [3] * 5 and torch.bincount(labels[second]).tolist() == [4] * 5
    again, _ = split_halves(labels, seed=1)
    other, _ = split_halves(labels, seed=2)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_one_matching_rule_for_both_pools():
    early = torch.tensor([[0.1, 0.5, 0.52, 0.5], [0.1, 0.2, 0.3, 0.35]])  # two runs, four iterates each
    pick, ok = match_runs(early, 0.5, tolerance=0.03)
    assert pick.tolist() == [1, 3] and ok.tolist() == [True, False]  # earliest of the ties; run 1 too far
    subsets = torch.tensor([[0.49], [0.9]])  # a subset model offers one candidate: its final state
    pick, ok = match_runs(subsets, 0.5, tolerance=0.03)
    assert pick.tolist() == [0, 0] and ok.tolist() == [True, False]


def test_verdicts_come_with_intervals_and_tests(smoke_set, accelerator, tmp_path):
    folder = tmp_path / "set"
    shutil.copytree(smoke_set, folder)
    names = ["mixing", "agreement"]  # sensitivity's test: in test_audit.py's run of every audit
    report = run_audits(folder, only=names, preset="smoke", accelerator=accelerator,
                        cache=RealModelCache(root=tmp_path / "models"), overrides={"mixing": {"seeds": 3}})
    mixing = report["audits"]["mixing"]
    assert mixing["summary"]["seeds"] == 3
    dip = mixing["tests"][0]
    assert dip["n"] == 3 and dip["ci"][0] <= dip["estimate"] <= dip["ci"][1] and dip["outcome"] in OUTCOMES
    assert dip["outcome"] in mixing["verdict"] and "95% CI" in mixing["verdict"]
    assert len(mixing["tests"]) == 1 + len(mixing["summary"]["ks"])  # the dip, then distilled − random per k
    assert mixing["series"]["ks"] == mixing["summary"]["ks"]

    agreement = report["audits"]["agreement"]
    summary = agreement["summary"]
    assert summary["distilled_models"] == 3
    assert summary["matching_images"] == summary["scoring_images"] == 1000  # the embedded test split, halved
    (test,) = agreement["tests"]
    # 2 early runs vs 3 subset models, no ties expected: the exact U distribution's smallest p is 2/10
    assert test["p"] >= 0.2 - 1e-9 and test["outcome"] == OPEN and "Mann–Whitney" in agreement["verdict"]
    assert len(agreement["series"]["early"]) == 2 and len(agreement["series"]["subset"]) == 3

    saved = json.loads((folder / "audit" / "report.json").read_text())
    assert saved["audits"]["agreement"]["tests"] == agreement["tests"]
    card = (folder / "README.md").read_text()
    assert card.count("Intervals and tests behind the verdict") == 2
    from distilkit.card import read_card

    yaml_tests = read_card(folder).data["distilkit"]["audits"]["mixing"]["tests"]
    assert yaml_tests[0]["ci"] == dip["ci"] and yaml_tests[0]["outcome"] == dip["outcome"]


def test_two_sample_interval_separates_and_stays_open():
    apart = two_sample_test("c", "s", [1.0, 1.1, 0.9, 1.05], [2.0, 2.1, 1.9, 2.05], -1)
    assert apart["ci"][1] < 0 and apart["outcome"] == HOLDS and apart["n"] == "4 + 4"
    assert two_sample_test("c", "s", [1.0, 1.1, 0.9, 1.05], [2.0, 2.1, 1.9, 2.05], +1)["outcome"] == FAILS
    assert two_sample_test("c", "s", [1.0, 2.0, 3.0], [1.5, 2.5, 2.0], +1)["outcome"] == OPEN
    assert two_sample_test("c", "s", [5.0, 5.1], [1.0, 1.1], +1)["outcome"] == OPEN  # too few probes for a verdict


def test_curvature_and_early_recognition_verdicts_carry_intervals(smoke_set, accelerator, tmp_path):
    folder = tmp_path / "set"
    shutil.copytree(smoke_set, folder)
    report = run_audits(folder, only=["curvature", "early-recognition"], preset="smoke", accelerator=accelerator,
                        cache=RealModelCache(root=tmp_path / "models"),
                        overrides={"curvature": {"max_probes": 6, "tolerance": 1e-12}})
    curvature = report["audits"]["curvature"]
    below = curvature["tests"][0]
    assert below["n"] == "6 + 6" and below["ci"][0] <= below["estimate"] <= below["ci"][1]
    assert curvature["summary"]["outcome"] in OUTCOMES and curvature["summary"]["outcome"] in curvature["verdict"]
    assert "95% CI" in curvature["verdict"] and "Hutchinson probes" in curvature["verdict"]

    early = report["audits"]["early-recognition"]
    (gain,) = early["tests"]
    assert gain["unit"] == "test images" and gain["n"] == early["summary"]["test_images"]
    # the interval is of the same gain the summary reports (both smoothed over the window)
    assert abs(gain["estimate"] - early["summary"]["test_gain_after_plateau"]) < 2e-4
    assert gain["ci"][0] <= gain["estimate"] <= gain["ci"][1]
    assert early["summary"]["outcome"] in early["verdict"] and "95% CI" in early["verdict"]
