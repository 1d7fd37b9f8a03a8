"""Q3 influence: vectorised leave-one-out equals the sequential reference; TracIn is compared with it."""

from __future__ import annotations

import pytest
import torch

from distilkit.audit._loo import influence_from_losses, loo_influence_sequential, loo_test_losses, spearman, tracin
from distilkit.audit._real_runs import STUDY_DISTILLED
from distilkit.audit.influence import (
    class_matched_coherence,
    mean_pairwise_cosine,
    random_same_class_coherence,
    sign_test_p,
    two_proportion_p,
)
from distilkit.errors import DistilkitError
from distilkit.models import create_model
from distilkit.train import TrainConfig


@pytest.fixture(scope="module")
def tiny_set():
    torch.manual_seed(0)
    model = create_model("convnet-w4-d2", 1, 3, (12, 12))
    x, y = torch.randn(9, 1, 12, 12), torch.arange(3).repeat_interleave(3)
    tx, ty = torch.randn(20, 1, 12, 12), torch.randint(0, 3, (20,))
    return model, x, y, tx, ty


@pytest.mark.parametrize("schedule", [{}, {"lr_schedule": "step_half", "weight_decay": 5e-4}])
def test_vectorised_leave_one_out_equals_sequential(tiny_set, schedule):
    model, x, y, tx, ty = tiny_set
    cfg = TrainConfig(**{**STUDY_DISTILLED, "iterations": 8, **schedule})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sequential = loo_influence_sequential(model, x, y, tx, ty, cfg)
    vectorised = influence_from_losses(loo_test_losses(model, x, y, tx, ty, cfg, model_chunk=4, strategy="vectorised"))
    vmapped = influence_from_losses(loo_test_losses(model, x, y, tx, ty, cfg, model_chunk=4, strategy="vectorised",
                                                    stacking="vmap"))
    assert vectorised.shape == (9, 20)
    torch.testing.assert_close(vectorised, sequential, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(vmapped, sequential, atol=2e-5, rtol=1e-4)
    assert sequential.abs().max() > 1e-3  # leaving a point out changes the test losses
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the shared init is untouched
    everything = loo_test_losses(model, x, y, tx, ty, cfg, strategy="vectorised")
    for strategy in ("vectorised", "sequential"):  # one process's share
        share = loo_test_losses(model, x, y, tx, ty, cfg, model_chunk=2, models=[3, 9], strategy=strategy)
        torch.testing.assert_close(share, everything[[3, 9]], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["convnet-w4-d2", "convnet-w4-d2-nn-np", "convnet-w4-d1-gn-mp"])
def test_stacked_convnet_equals_each_model_on_its_own(name):
    from torch.func import functional_call

    from distilkit.audit._loo import stacked_convnet

    torch.manual_seed(1)
    models = [create_model(name, 3, 5, (12, 12)) for _ in range(3)]
    params = {k: torch.stack([dict(m.named_parameters())[k] for m in models]) for k, _ in models[0].named_parameters()}
    x = torch.randn(4, 3, 12, 12)
    forward = stacked_convnet(models[0], 3)
    assert forward is not None
    expected = torch.stack([functional_call(models[0], {k: v[i] for k, v in params.items()}, (x,)) for i in range(3)])
    torch.testing.assert_close(forward(params, x), expected, atol=1e-5, rtol=1e-4)
    assert stacked_convnet(create_model("convnet-w4-d2-bn", 3, 5, (12, 12)), 3) is None


def test_tracin_ranks_like_exact_leave_one_out(tiny_set):
    model, x, y, tx, ty = tiny_set
    cfg = TrainConfig(**{**STUDY_DISTILLED, "iterations": 30})
    exact = influence_from_losses(loo_test_losses(model, x, y, tx, ty, cfg, strategy="vectorised"))
    fast = tracin(model, x, y, tx, ty, cfg, checkpoints=30)
    rho = spearman(fast, exact)
    assert rho > 0.6, rho
    assert spearman(exact, exact) == pytest.approx(1.0)
    assert spearman(exact, -exact) == pytest.approx(-1.0)


def test_leave_one_out_rejects_minibatches_and_batchnorm(tiny_set):
    _, x, y, tx, ty = tiny_set
    with pytest.raises(DistilkitError, match="full-batch"):
        loo_test_losses(create_model("convnet-w4-d2", 1, 3, (12, 12)), x, y, tx, ty, TrainConfig(batch_size=4))
    with pytest.raises(DistilkitError, match="running statistics"):
        loo_test_losses(create_model("convnet-w4-d2-bn", 1, 3, (12, 12)), x, y, tx, ty,
                        TrainConfig(**STUDY_DISTILLED))


def test_sign_test():
    assert sign_test_p(5, 10) == pytest.approx(1.0)
    assert sign_test_p(10, 10) == pytest.approx(2 / 1024)
    assert sign_test_p(0, 10) == sign_test_p(10, 10)
    assert sign_test_p(66, 100) < 0.002 < sign_test_p(60, 100) < 0.06
    assert two_proportion_p(0.75, 100, 0.67, 100) == pytest.approx(0.21, abs=0.01)
    assert two_proportion_p(0.9, 100, 0.5, 100) < 1e-6 and two_proportion_p(0.5, 10, 0.5, 20) == pytest.approx(1.0)


def test_coherence_scores():
    same = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    torch.testing.assert_close(mean_pairwise_cosine(torch.stack([same, mixed])), torch.tensor([1.0, -1 / 3]))
    features = torch.cat([same, mixed])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    torch.testing.assert_close(random_same_class_coherence(features, labels, 2, 3, sets=4, seed=0),
                               torch.tensor([1.0, -1 / 3]))
    # class-matched sets: a pure class-0 top set can only be matched by class-0 images (cosine 1); a set of
    # two class-0 images and one class-1 image is matched by sets of that make-up, whose cosine varies
    top = torch.tensor([[0, 1, 2], [0, 1, 4]])
    matched = class_matched_coherence(features, labels, top, sets=200, seed=0)
    assert matched[0] == pytest.approx(1.0)
    mixed_sets = [mean_pairwise_cosine(features[torch.tensor([a, b, c])]).item()
                  for a in range(3) for b in range(3) for c in (3, 4, 5)]
    assert min(mixed_sets) - 1e-6 <= matched[1] <= max(mixed_sets) + 1e-6 and min(mixed_sets) < max(mixed_sets)


def test_influence_audit_on_smoke_preset_with_its_random_real_baseline(tmp_path, accelerator):
    from safetensors.torch import load_file

    from distilkit.audit._report import run_audits
    from distilkit.config import DistillConfig
    from distilkit.pipeline import distill

    folder = distill(DistillConfig(method="dm", ipc=2, preset="smoke", out=str(tmp_path / "set")),
                     accelerator=accelerator)
    entry = run_audits(folder, only=["influence"], preset="smoke", accelerator=accelerator)["audits"]["influence"]
    summary = entry["summary"]
    assert 0 <= summary["class_purity"] <= 1 and 0 <= summary["random_real/class_purity"] <= 1
    assert 0 < summary["sign_test_p_class_matched"] <= 1
    assert "Random real images of the same number" in entry["verdict"]
    assert 0 < summary["difference_p_vs_random_real"] <= 1
    # the noise floor: leave-one-out from a second init, its top-k overlap next to the semantic scores
    assert summary["noise_floor/inits"] == 2 and summary["noise_floor/images"] == 20
    assert 0 <= summary["noise_floor/top_k_overlap"] <= 1 and summary["noise_floor/chance_overlap"] == 0.05
    assert "Noise floor" in entry["verdict"] and "TracIn (not used)" in entry["verdict"]
    assert isinstance(summary["tracin_substitute"], bool)
    assert [t["claim"] for t in entry["tests"]] == ["each image's top-k shares a sub-concept beyond its classes",
                                                    "top-k sets are reproducible across initialisations"]
    artifact = load_file(str(folder / "audit" / "influence.safetensors"))
    assert artifact["influence"].shape == artifact["random_real_influence"].shape == (20, 60)
    assert not torch.equal(artifact["influence"], artifact["random_real_influence"])
    card = (folder / "README.md").read_text()
    assert "The distilled set vs class-balanced random real images of the same size" in card
    assert "influence_class0.png" in card

    entry = run_audits(folder, only=["influence"], preset="smoke", accelerator=accelerator,
                       overrides={"influence": {"random_real_baseline": False}})["audits"]["influence"]
    assert not any(key.startswith("random_real/") for key in entry["summary"])


def test_top_k_overlap():
    from distilkit.audit.influence import top_k_overlap

    a = torch.tensor([[5.0, 4, 3, 0, 0], [1, 2, 3, 4, 5]])
    b = torch.tensor([[5.0, 0, 3, 4, 0], [5, 4, 3, 2, 1]])
    # row 0: top-2 {0, 1} vs {0, 3} -> 1/2; row 1: {4, 3} vs {0, 1} -> 0
    assert top_k_overlap(a, b, 2).tolist() == [0.5, 0.0]
    assert top_k_overlap(a, a, 3).tolist() == [1.0, 1.0]
