"""Q2 audits: the curvature estimators against the exact Hessian, the plateau rule, pool caching."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch.func import functional_call

from distilkit.audit._hessian import hessian_vector_products, hutchinson_trace, top_eigenvalue, trainable_parameters
from distilkit.audit._real_runs import parse_iterations
from distilkit.audit._report import run_audits
from distilkit.audit.early_recognition import plateau_iteration, trailing_mean
from distilkit.models import create_model
from distilkit.real_models import RealModelCache
from distilkit.train import soft_cross_entropy


@pytest.fixture(scope="module")
def tiny_problem():
    """A small ConvNet (243 parameters) on random data, and its exact Hessian by autograd."""
    torch.manual_seed(0)
    model = create_model("convnet-w4-d1", 1, 3, (8, 8)).eval()
    x, y = torch.randn(30, 1, 8, 8), torch.randint(0, 3, (30,))
    names = [n for n, _ in model.named_parameters()]
    params = trainable_parameters(model)
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def loss(vector: torch.Tensor) -> torch.Tensor:
        pieces = vector.split([p.numel() for p in params])
        state = {n: piece.view_as(p) for n, piece, p in zip(names, pieces, params, strict=True)}
        return soft_cross_entropy(functional_call(model, state, (x,)), y)

    hessian = torch.autograd.functional.hessian(loss, flat)
    return model, x, y, hessian


@pytest.mark.parametrize("batched", [True, False])
def test_hessian_vector_products_match_exact_hessian_for_any_chunking(tiny_problem, batched):
    model, x, y, hessian = tiny_problem
    vectors = torch.randn(3, hessian.shape[0], generator=torch.Generator().manual_seed(1))
    expected = vectors @ hessian
    for chunk in (7, 30):
        got = hessian_vector_products(model, x, y, vectors, chunk_size=chunk, batched=batched)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_hutchinson_trace_matches_exact_trace(tiny_problem):
    model, x, y, hessian = tiny_problem
    exact = hessian.trace().item()
    estimate = hutchinson_trace(model, x, y, torch.Generator().manual_seed(0), max_probes=1500, tol=0.0,
                                probe_batch=250)
    assert estimate.probes == 1500 and not estimate.converged
    assert abs(estimate.trace - exact) / exact < 0.05
    assert abs(estimate.trace - exact) < 4 * estimate.standard_error


def test_hutchinson_stopping_rule_and_probe_batching_do_not_change_the_estimate(tiny_problem):
    model, x, y, _ = tiny_problem
    one = hutchinson_trace(model, x, y, torch.Generator().manual_seed(3), max_probes=100, tol=1e-2, probe_batch=1,
                           batched=False)
    many = hutchinson_trace(model, x, y, torch.Generator().manual_seed(3), max_probes=100, tol=1e-2, probe_batch=9)
    assert one.converged and one.probes < 100
    assert one.probes == many.probes
    assert one.trace == pytest.approx(many.trace, rel=1e-5)
    mean_before = sum(one.values[:-1]) / (one.probes - 1)
    assert abs(one.trace - mean_before) / abs(mean_before) < 1e-2  # PyHessian's rule held when it stopped


def test_power_iteration_finds_the_largest_magnitude_eigenvalue(tiny_problem):
    model, x, y, hessian = tiny_problem
    eigenvalues = torch.linalg.eigvalsh(hessian)
    dominant = eigenvalues[eigenvalues.abs().argmax()].item()
    value, iterations = top_eigenvalue(model, x, y, torch.Generator().manual_seed(0), max_iterations=500, tol=1e-7)
    assert iterations < 500
    assert value == pytest.approx(dominant, rel=1e-3)


def test_plateau_rule():
    acc = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.8, 0.8, 0.81, 0.8, 0.8, 0.8])
    torch.testing.assert_close(trailing_mean(acc, 2)[:3], torch.tensor([0.1, 0.2, 0.4]))
    assert plateau_iteration(acc, window=1, tolerance=0.02) == 4
    assert plateau_iteration(acc, window=3, tolerance=1e-6) == 6  # the trailing mean first reaches (.8+.8+.81)/3
    assert plateau_iteration(torch.linspace(0, 1, 11), window=1, tolerance=0.0) == 10


def test_parse_iterations():
    assert parse_iterations("0:301:100") == [0, 100, 200, 300]
    assert parse_iterations([5, 0, 5]) == [0, 5]
    assert parse_iterations(7) == [7]
    with pytest.raises(ValueError):
        parse_iterations("1")


@pytest.fixture(scope="module")
def smoke_set(tmp_path_factory, accelerator):
    from distilkit.config import DistillConfig
    from distilkit.pipeline import distill

    out = tmp_path_factory.mktemp("q2") / "set"
    distill(DistillConfig(method="random", ipc=2, preset="smoke", out=str(out)), accelerator=accelerator)
    return out


def test_q2_report_pools_are_cached_and_card_has_the_question(smoke_set, accelerator, tmp_path):
    folder = tmp_path / "set"
    shutil.copytree(smoke_set, folder)
    cache = RealModelCache(root=tmp_path / "models")
    names = ["agreement", "early-recognition", "curvature"]
    report = run_audits(folder, only=names, preset="smoke", accelerator=accelerator, cache=cache)
    assert cache.misses == 2 and cache.hits == 0  # the two agreement pools
    agreement = report["audits"]["agreement"]["summary"]
    assert agreement["early/runs"] == 2 and agreement["subset/pool"] == 3
    assert 0 <= agreement["early/mean_matched_iteration"] <= agreement["early/window_iterations"] == 4
    assert agreement["subset/matched"] == 3  # smoke tolerance 1.0 matches every subset model
    curvature = report["audits"]["curvature"]["summary"]
    assert curvature["real/peak_iteration"] in (0, 2, 4) and curvature["real/end_trace"] > 0
    assert report["audits"]["early-recognition"]["summary"]["plateau_iteration"] <= 6

    card = (folder / "README.md").read_text()
    assert "Q2 — What information does distilled data capture?" in card
    assert card.count("#### `curvature`") == 1
    again = RealModelCache(root=tmp_path / "models")
    run_audits(folder, only=["agreement"], preset="smoke", accelerator=accelerator, cache=again)
    assert again.misses == 0 and again.hits == 2  # both pools came back from the cache
    saved = json.loads((folder / "audit" / "report.json").read_text())
    assert saved["audits"]["agreement"]["summary"] == agreement  # same seed, same result


def test_test_split_is_a_seeded_class_balanced_subsample(embedded_real):
    from distilkit.audit._real_runs import test_split

    images, labels = test_split(embedded_real, 50, seed=3)
    assert images.shape[0] == 50 and torch.bincount(labels).tolist() == [5] * 10
    again, _ = test_split(embedded_real, 50, seed=3)
    other, _ = test_split(embedded_real, 50, seed=4)
    assert torch.equal(images, again) and not torch.equal(images, other)
    full, full_labels = test_split(embedded_real, None, seed=3)
    assert full_labels.shape[0] == embedded_real.test_labels.shape[0]


def test_curvature_ema_decays_per_iteration():
    from distilkit.audit.curvature import ema

    assert ema([0, 1, 2], [0.0, 10.0, 10.0], 0.9) == pytest.approx([0.0, 1.0, 1.9])
    assert ema([0, 30], [0.0, 10.0], 0.9)[1] == pytest.approx(10 * (1 - 0.9**30))  # sparse points: less smoothing
