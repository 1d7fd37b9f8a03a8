"""Fair scores in ``evaluate --scores`` (IOR, HLR, LRS, ARS), their card table and ``verify``, and the
``--models cross`` pool. A 2-epoch smoke protocol keeps the full-real training to seconds."""

from __future__ import annotations

import math
import re
import shutil

import pytest
import torch
from click.testing import CliRunner

from distilkit.cli import cli, evaluate, verify  # noqa: F401  (register)
from distilkit.distilled import DistilledSet
from distilkit.evaluate import evaluate_folder, evaluate_set
from distilkit.real_models import RealModelCache
from distilkit.scores import exp_score
from distilkit.train import train_preset

FAST = train_preset("smoke", epochs=2)


@pytest.fixture(scope="module")
def cache():
    """The default real-model cache (under the tests' DISTILKIT_CACHE), shared so that the full-real model
    of FAST is trained once for this module, as ``evaluate`` and ``verify`` would share it."""
    return RealModelCache()


@pytest.fixture(scope="module")
def small_set(tmp_path_factory, embedded_real):
    """2 real images per class, normalised, hard labels: a set whose IOR should be near 0."""
    from distilkit.data.sources import SourceConfig

    real = embedded_real
    idx = torch.cat([torch.nonzero(real.train_labels == c).flatten()[:2] for c in range(real.num_classes)])
    dset = DistilledSet(images=real.batch(idx), labels=real.train_labels[idx], class_names=real.class_names,
                        pixel_space=real.pixel_space, method="random", ipc=2,
                        config={"method": "random", "ipc": 2, "source": SourceConfig().__dict__},
                        source=real.info, provenance={"seed": 0, "distilkit_version": "test", "preset": "smoke"})
    folder = tmp_path_factory.mktemp("scores") / "set"
    dset.save(folder)
    return folder


def test_exp_score_is_ddrankings_squashing():
    assert exp_score(-1) == pytest.approx(0.0) and exp_score(1) == pytest.approx(1.0)
    assert exp_score(0) == pytest.approx((1 - math.exp(-1)) / (math.e - math.exp(-1)))


def test_scores_follow_the_formulas_and_full_real_is_trained_once(small_set, accelerator, cache):
    dset = DistilledSet.load(small_set)
    misses, hits = cache.misses, cache.hits
    [result] = evaluate_set(dset, runs=2, preset="smoke", protocol=FAST, scores=True, cache=cache,
                            accelerator=accelerator)
    assert cache.misses + cache.hits == misses + hits + 1
    misses, hits = cache.misses, cache.hits
    sc = result["scores"]
    assert sc["w"] == 0.5 and sc["accuracy_unit"] == "fraction" and sc["random_labels"] == "hard"
    acc = sc["accuracies"]
    assert acc["set"] == pytest.approx(result["mean"], abs=1e-6)
    assert 0 < acc["full_real"] <= 1 and acc["set_hard"] == acc["set"]  # hard labels: the same runs
    assert FAST.dsa and acc["set_aug"] == acc["set"] and acc["random_aug"] == acc["random"]
    for i in range(2):
        ior, hlr = sc["ior"]["values"][i], sc["hlr"]["values"][i]
        assert sc["lrs"]["values"][i] == pytest.approx(exp_score(0.5 * ior - 0.5 * hlr), abs=2e-6)
        assert 0 <= sc["ars"]["values"][i] <= 1
    assert sc["ior"]["mean"] == pytest.approx(acc["set"] - acc["random"], abs=2e-6)
    assert sc["hlr"]["mean"] == pytest.approx(acc["full_real"] - acc["set_hard"], abs=2e-6)
    again = evaluate_set(dset, runs=1, preset="smoke", protocol=FAST, scores=True, cache=cache,
                         accelerator=accelerator)
    assert (cache.misses, cache.hits) == (misses, hits + 1)  # cached per (source, space, model, protocol)
    assert again[0]["scores"]["accuracies"]["full_real"] == acc["full_real"]


def test_soft_label_sets_get_a_teacher_labelled_random_subset(small_set, accelerator, cache):
    dset = DistilledSet.load(small_set)
    dset.soft_labels = torch.softmax(3 * torch.nn.functional.one_hot(dset.labels, 10).float(), dim=1)
    [result] = evaluate_set(dset, runs=1, preset="smoke", protocol=FAST, scores=True,
                            cache=cache, accelerator=accelerator)
    assert result["scores"]["random_labels"].startswith("soft")
    assert set(result["scores"]["accuracies"]) >= {"set", "set_hard", "random", "set_noaug", "random_noaug"}


def test_scores_in_the_card_and_verify_checks_them(small_set, accelerator, cache, tmp_path):
    folder = tmp_path / "s"
    shutil.copytree(small_set, folder)
    evaluate_folder(folder, runs=1, preset="smoke", protocol=FAST, scores=True, accelerator=accelerator, cache=cache)
    card = (folder / "README.md").read_text()
    assert "Fair scores" in card and "| IOR | HLR | LRS | ARS |" in card
    dset = DistilledSet.load(folder)
    assert set(dset.evaluation[0]["scores"]) >= {"ior", "hlr", "lrs", "ars", "accuracies"}

    result = CliRunner().invoke(cli, ["verify", str(folder)])
    assert result.exit_code == 0, result.output
    assert "IOR" in result.output and "LRS" in result.output and "DOES NOT HOLD" not in result.output

    text = (folder / "README.md").read_text()
    inflated = re.sub(r"(\n\s+ior:\n\s+mean: )([-0-9.e]+)", lambda m: f"{m[1]}{float(m[2]) + 0.3:.6f}", text, count=1)
    assert inflated != text
    (folder / "README.md").write_text(inflated)
    result = CliRunner().invoke(cli, ["verify", str(folder)])
    assert result.exit_code == 1, result.output
    assert re.search(r"IOR .*DOES NOT HOLD", result.output), result.output


def test_cross_pool_expands_and_every_model_fits_the_image_size():
    from distilkit.models import create_model
    from distilkit.models.classic import cross_pool, expand_models

    assert cross_pool("convnet-w32") == ["convnet-w32", "convnet-w32-bn", "timm/resnet18", "vgg11", "alexnet"]
    assert cross_pool("timm/resnet18")[:2] == ["convnet", "convnet-bn"]
    assert cross_pool("convnet-d3-in")[1] == "convnet-d3-bn"
    assert expand_models(["alexnet", "cross"], "convnet") == ["alexnet", "convnet", "convnet-bn", "timm/resnet18",
                                                              "vgg11"]
    for channels, size in ((1, 28), (3, 32)):
        for name in cross_pool("convnet-w8-d2"):
            model = create_model(name, channels, 10, (size, size))
            assert model(torch.randn(2, channels, size, size)).shape == (2, 10), (name, size)


def test_evaluate_cli_cross_reports_each_model_and_the_mean(small_set, tmp_path, monkeypatch):
    """``--models cross`` through the CLI: each pool member, then the mean (the pool is patched to three
    small ConvNets so that the test stays fast; the real pool's members are built in the test above)."""
    import distilkit.models.classic as classic
    import distilkit.train as train

    monkeypatch.setitem(train.TRAIN_PRESETS, "smoke", train_preset("smoke", epochs=1))
    monkeypatch.setattr(classic, "cross_pool", lambda base: [base, f"{base}-bn", "convnet-w4-d1"])
    folder = tmp_path / "s"
    shutil.copytree(small_set, folder)
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "--runs", "1", "--preset", "smoke", "--models", "cross"])
    assert result.exit_code == 0, result.output
    for name in ("convnet-w8-d2 ", "convnet-w8-d2-bn", "convnet-w4-d1", "mean of 3 models"):
        assert name in result.output, result.output
    dset = DistilledSet.load(folder)
    assert [r["model"] for r in dset.evaluation] == ["convnet-w8-d2", "convnet-w8-d2-bn", "convnet-w4-d1"]
    mean = sum(r["mean"] for r in dset.evaluation) / 3
    assert f"| mean of 3 models | smoke | | {100 * mean:.2f} % | |" in (folder / "README.md").read_text()
