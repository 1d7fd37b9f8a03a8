"""dc / dsa (gradient matching): the distance, vmap == per-class loop, learning, resume, DSA sharing, errors."""

from __future__ import annotations

import pytest
import torch

from distilkit.checkpoint import Checkpointer
from distilkit.data.dsa import DSA
from distilkit.errors import DistilkitError
from distilkit.methods import RunContext, get_method
from distilkit.methods import gradient_matching as gm
from distilkit.seeding import seeded_model


def run(name, real, accelerator, seed=0, ipc=2, checkpointer=None, resume=False, **args):
    spec = get_method(name)
    cfg = spec.resolve("smoke", ipc, args)
    return spec.fn(real, ipc, cfg, RunContext(accelerator, seed, checkpointer, resume))


def test_distance_by_hand():
    # A conv-like [2 rows, 1, 1, 2] gradient for one class: row 0 identical (cos 1), row 1 orthogonal (cos 0).
    real = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 2.0]]]]).unsqueeze(0)
    syn = torch.tensor([[[[3.0, 0.0]]], [[[5.0, 0.0]]]]).unsqueeze(0)
    eps = gm.COSINE_EPS
    expected = (1 - 3.0 / (1 * 3 + eps)) + (1 - 0.0)
    assert gm.gradient_distance(real, syn).item() == pytest.approx(expected, abs=1e-7)
    # A linear weight [2 out, 2 in], two classes: rows are output units; opposite rows give 1 - (-1) = 2.
    real_lin = torch.tensor([[[1.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [2.0, 2.0]]])
    syn_lin = torch.tensor([[[-1.0, -1.0], [1.0, 1.0]], [[0.0, 4.0], [1.0, 1.0]]])
    cos = [-2 / (2 ** 0.5 * 2 ** 0.5 + eps), 1 / (1 * 2 ** 0.5 + eps), 4 / (4 + eps), 4 / (8 ** 0.5 * 2 ** 0.5 + eps)]
    assert gm.gradient_distance(real_lin, syn_lin).item() == pytest.approx(sum(1 - c for c in cos), abs=1e-6)
    # 1-D parameters (biases, norm affine) contribute nothing, however different.
    assert gm.gradient_distance(torch.tensor([[1.0, 2.0]]), torch.tensor([[-5.0, 3.0]])).item() == 0.0


@pytest.mark.parametrize("use_dsa", [False, True], ids=["dc", "dsa"])
def test_vmap_equals_the_per_class_loop(use_dsa, embedded_real, accelerator):
    generator = torch.Generator().manual_seed(3)
    net = seeded_model("convnet-w8-d2", embedded_real, generator, accelerator.device)
    images = embedded_real.batch(embedded_real.sample_per_class(3, generator).reshape(-1)).clone()
    images.requires_grad_(True)
    indices = embedded_real.sample_per_class(6, generator)
    dsa = DSA() if use_dsa else None
    params = dsa.sample(10, generator) if dsa is not None else None
    results = {}
    for strategy in ("loop", "vmap"):
        images.grad = None
        loss = gm.matching_step(net, embedded_real, indices, images, dsa, params, accelerator, 6, strategy)
        results[strategy] = (loss, images.grad.clone())
    assert results["vmap"][0] == pytest.approx(results["loop"][0], rel=1e-5)
    scale = results["loop"][1].abs().max().item()
    assert scale > 0
    torch.testing.assert_close(results["vmap"][1], results["loop"][1], atol=1e-5 * scale, rtol=1e-4)
    assert all(p.grad is None for p in net.parameters())  # only the images receive gradients


@pytest.mark.parametrize("name", ["dc", "dsa"])
def test_images_move_and_the_matching_loss_falls(name, embedded_real, accelerator):
    out = run(name, embedded_real, accelerator, iterations=12, init="noise", outer_loop=1, lr_images=1.0)
    start = run(name, embedded_real, accelerator, iterations=0, init="noise")
    assert not torch.equal(out.images, start.images)
    losses = out.history["loss"]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


@pytest.mark.parametrize("name", ["dc", "dsa"])
def test_resume_is_bit_identical(name, embedded_real, accelerator, tmp_path):
    class Crash(RuntimeError):
        pass

    class CrashingCheckpointer(Checkpointer):
        def save(self, tensors, state) -> None:
            super().save(tensors, state)
            if state["step"] == 4:
                raise Crash

    full = run(name, embedded_real, accelerator, iterations=6)
    with pytest.raises(Crash):
        run(name, embedded_real, accelerator, iterations=6, checkpointer=CrashingCheckpointer(tmp_path, "fp", every=2))
    resumed = run(name, embedded_real, accelerator, iterations=6, resume=True,
                  checkpointer=Checkpointer(tmp_path, "fp", every=2))
    assert torch.equal(full.images, resumed.images)
    assert resumed.history == full.history


def test_dsa_gives_real_and_synthetic_of_a_class_the_same_transformation(embedded_real, accelerator, monkeypatch):
    calls = []
    original = DSA.__call__

    def spy(self, x, params, groups=None):
        calls.append((params, None if groups is None else groups.clone()))
        return original(self, x, params, groups)

    monkeypatch.setattr(DSA, "__call__", spy)
    run("dsa", embedded_real, accelerator, iterations=1, outer_loop=1, batch_real=4)
    (real_params, real_groups), (syn_params, syn_groups) = calls[:2]
    assert real_params is syn_params  # one draw per matching step, used for both batches
    assert real_params.op.shape == (10,)  # one parameter set per class
    assert torch.equal(real_groups, torch.arange(10).repeat_interleave(4))
    assert torch.equal(syn_groups, torch.arange(10).repeat_interleave(2))


def test_dc_draws_no_augmentation(embedded_real, accelerator, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("dc must not augment")

    monkeypatch.setattr(DSA, "__call__", fail)
    run("dc", embedded_real, accelerator, iterations=1)


@pytest.mark.parametrize(("name", "args", "message"), [
    ("dc", {"iteratons": 3}, "unknown option"),
    ("dc", {"dsa_strategy": "crop"}, "unknown option"),
    ("dsa", {"dsa_strategy": "crop_blur"}, "unknown DSA strategy"),
    ("dc", {"gradient_strategy": "fast"}, "unknown gradient_strategy"),
    ("dsa", {"outer_loop": 0}, "outer_loop must be >= 1"),
    ("dc", {"batch_real": 100000}, "exceeds the smallest class"),
    ("dc", {"model": "convnet-w8-d2-bn"}, "BatchNorm"),
])
def test_bad_settings_are_one_line_errors(name, args, message, embedded_real, accelerator):
    with pytest.raises(DistilkitError, match=message) as err:
        run(name, embedded_real, accelerator, iterations=1, **args)
    assert "\n" not in str(err.value)


def test_loops_follow_dc_by_ipc():
    spec = get_method("dc")
    assert [(spec.resolve("standard", ipc)["outer_loop"], spec.resolve("standard", ipc)["inner_loop"])
            for ipc in (1, 10, 50)] == [(1, 1), (10, 50), (50, 10)]
    cfg = spec.resolve("standard", 10)
    assert (cfg["lr_images"], cfg["momentum"], cfg["lr_net"], cfg["batch_real"], cfg["iterations"]) == \
        (0.1, 0.5, 0.01, 256, 1000)
    assert "dsa_strategy" in get_method("dsa").defaults and "dsa_strategy" not in spec.defaults
