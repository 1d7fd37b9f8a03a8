"""cafe, krr (FRePo and KIP kernels) and bptt: resume, learned labels/lr, exact checkpointing, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import Crash, CrashingCheckpointer

from distilkit.checkpoint import Checkpointer
from distilkit.errors import DistilkitError
from distilkit.methods import RunContext, get_method

VARIANTS = [("cafe", {}), ("krr", {}), ("krr", {"kernel": "random-features"}), ("bptt", {})]


def run(name, real, accelerator, seed=0, ipc=2, checkpointer=None, resume=False, **args):
    spec = get_method(name)
    cfg = spec.resolve("smoke", ipc, args)
    return spec.fn(real, ipc, cfg, RunContext(accelerator, seed, checkpointer, resume))


@pytest.mark.parametrize(("name", "args"), VARIANTS, ids=["cafe", "krr-frepo", "krr-kip", "bptt"])
def test_resume_is_bit_identical(name, args, embedded_real, accelerator, tmp_path):
    # 7 iterations: the FRePo pool (max_online_steps 3) and cafe's network (outer_loop 3) are
    # mid-way through their lives at the checkpoint of step 4, so their state must be restored too.
    full = run(name, embedded_real, accelerator, iterations=7, **args)
    crashing = CrashingCheckpointer(tmp_path / "ckpt", "fp", every=2, crash_at=4)
    with pytest.raises(Crash):
        run(name, embedded_real, accelerator, iterations=7, checkpointer=crashing, **args)
    resumed = run(name, embedded_real, accelerator, iterations=7, resume=True,
                  checkpointer=Checkpointer(tmp_path / "ckpt", "fp", every=2), **args)
    assert torch.equal(full.images, resumed.images)
    assert resumed.history == full.history
    if full.soft_labels is not None:
        assert torch.equal(full.soft_labels, resumed.soft_labels)
    assert full.learned_lr == resumed.learned_lr


@pytest.mark.parametrize(("name", "args"), VARIANTS[1:], ids=["krr-frepo", "krr-kip", "bptt"])
def test_learned_soft_labels_are_distributions_that_moved(name, args, embedded_real, accelerator):
    out = run(name, embedded_real, accelerator, iterations=5, lr_labels=0.1, **args)
    assert out.soft_labels.shape == (20, 10)
    torch.testing.assert_close(out.soft_labels.sum(1), torch.ones(20))
    start = torch.full((20, 10), 0.1 / 9)
    start[torch.arange(20), out.labels] = 0.9
    assert not torch.allclose(out.soft_labels, start, atol=1e-4)
    assert out.soft_labels.argmax(1).eq(out.labels).float().mean() > 0.5
    fixed = run(name, embedded_real, accelerator, iterations=2, learn_labels=False, **args)
    assert fixed.soft_labels is None


def test_bptt_learns_the_inner_lr(embedded_real, accelerator):
    out = run("bptt", embedded_real, accelerator, iterations=3, lr_lr=0.2)
    assert out.learned_lr is not None and out.learned_lr != pytest.approx(0.01, rel=1e-3)
    assert out.history["lr"][-1] == pytest.approx(out.learned_lr, rel=0.3)
    assert run("bptt", embedded_real, accelerator, iterations=1, learn_lr=False).learned_lr is None


def _unroll_grads(truncate, segment, momentum):
    from distilkit.methods.bptt import unrolled_backward
    from distilkit.models import create_model

    torch.manual_seed(0)
    net = create_model("convnet-w8-d2", 1, 10, (28, 28)).double()
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(6, 1, 28, 28, generator=gen, dtype=torch.float64).requires_grad_(True)
    logits = torch.randn(6, 10, generator=gen, dtype=torch.float64).requires_grad_(True)
    log_lr = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    x_real = torch.randn(8, 1, 28, 28, generator=gen, dtype=torch.float64)
    y_real = torch.randint(10, (8,), generator=gen)
    loss = unrolled_backward(net, images, torch.softmax(logits, 1), log_lr, x_real, y_real, 5, truncate, segment,
                             momentum)
    return loss, images.grad, logits.grad, log_lr.grad


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_bptt_checkpointing_gives_the_full_unroll_gradient(momentum):
    full = _unroll_grads(0, 0, momentum)
    for segment in (1, 2, 3):
        checkpointed = _unroll_grads(0, segment, momentum)
        assert checkpointed[0] == pytest.approx(full[0], rel=1e-12)
        for a, b in zip(checkpointed[1:], full[1:], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # truncation differentiates only the last steps: same loss, a different (partial) gradient,
    # which checkpointing again reproduces exactly
    truncated, truncated_ckpt = _unroll_grads(2, 0, momentum), _unroll_grads(2, 1, momentum)
    assert truncated[0] == pytest.approx(full[0], rel=1e-12)
    assert not torch.allclose(truncated[1], full[1])
    for a, b in zip(truncated_ckpt[1:], truncated[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_bptt_gradient_matches_finite_differences():
    from distilkit.methods.bptt import unrolled_backward
    from distilkit.models import create_model

    torch.manual_seed(0)
    net = create_model("convnet-w8-d2", 1, 10, (28, 28)).double()
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(4, 1, 28, 28, generator=gen, dtype=torch.float64)
    targets = torch.softmax(torch.randn(4, 10, generator=gen, dtype=torch.float64), 1)
    x_real, y_real = torch.randn(6, 1, 28, 28, generator=gen, dtype=torch.float64), torch.randint(10, (6,))

    def loss_at(value: float) -> tuple[float, float]:
        log_lr = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        loss = unrolled_backward(net, images.clone().requires_grad_(True), targets, log_lr, x_real, y_real, 4,
                                 0, 2, 0.9)
        return loss, float(log_lr.grad)

    eps = 1e-5
    _, grad = loss_at(-4.0)
    numeric = (loss_at(-4.0 + eps)[0] - loss_at(-4.0 - eps)[0]) / (2 * eps)
    assert grad == pytest.approx(numeric, rel=1e-4)


def test_krr_loss_is_the_closed_form_ridge_solution():
    from distilkit.methods.krr import krr_loss

    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    net.embed = net.forward  # a linear feature map
    x_syn, x_real = torch.randn(4, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    net.double()
    y_syn, y_real = torch.randn(4, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    loss = krr_loss([net], x_syn, y_syn, x_real, y_real, ridge=0.1)
    with torch.no_grad():
        f_s, f_t = net(x_syn), net(x_real)
        k = f_s @ f_s.T
        lam = 0.1 * k.diagonal().mean()
        pred = f_t @ f_s.T @ torch.linalg.solve(k + lam * torch.eye(4, dtype=torch.float64), y_syn)
    assert float(loss.detach()) == pytest.approx(float(((pred - y_real) ** 2).sum(1).mean()), rel=1e-8)


class RankThreeFeatures(torch.nn.Module):
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, -x], 1)


def test_krr_reports_a_kernel_that_is_not_positive_definite():
    from distilkit.methods.krr import krr_loss

    # 8 support points with 3-dimensional features: K_ss has rank 3, and a negative ridge
    # (which the method's option check refuses) makes it indefinite for sure
    x_syn = torch.randn(8, 3)
    with pytest.raises(DistilkitError, match="not positive definite.*larger ridge"):
        krr_loss([RankThreeFeatures()], x_syn, torch.randn(8, 2), torch.randn(4, 3), torch.randn(4, 2), ridge=-0.5)


def test_cafe_moves_images_and_lowers_the_layer_loss(embedded_real, accelerator):
    out = run("cafe", embedded_real, accelerator, iterations=30, batch_real=32, outer_loop=1, inner_steps=0)
    start = run("cafe", embedded_real, accelerator, iterations=0)
    assert not torch.equal(out.images, start.images)
    losses = out.history["layer_loss"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert len(out.history["disc_loss"]) == len(losses)


def test_block_outputs_end_with_the_embedding():
    from distilkit.models import create_model

    net = create_model("convnet-w8-d3", 1, 10, (28, 28))
    x = torch.randn(2, 1, 28, 28)
    outs = net.block_outputs(x)
    assert [tuple(o.shape[1:]) for o in outs] == [(8, 16, 16), (8, 8, 8), (8, 4, 4)]
    torch.testing.assert_close(outs[-1].flatten(1), net.embed(x))


@pytest.mark.parametrize(("name", "args", "message"), [
    ("krr", {"kernel": "ntk"}, "unknown kernel"),
    ("krr", {"ridge": 0}, "ridge must be > 0"),
    ("bptt", {"inner_steps": 0}, "inner_steps must be >= 1"),
    ("bptt", {"inner_momentum": 1.0}, "inner_momentum"),
    ("cafe", {"outer_loop": 0}, "outer_loop"),
    ("cafe", {"model": "timm/resnet18"}, "needs a ConvNet"),
])
def test_bad_settings_are_one_line_errors(name, args, message, embedded_real, accelerator):
    with pytest.raises(DistilkitError, match=message):
        run(name, embedded_real, accelerator, iterations=1, **args)


def test_preset_per_ipc_table_wins_over_the_global_one():
    spec = get_method("bptt")
    assert spec.resolve("cpu", 10)["inner_steps"] == spec.presets["cpu"]["per_ipc"][10]["inner_steps"]
    assert spec.resolve("cpu", 1)["inner_steps"] == spec.presets["cpu"]["per_ipc"][1]["inner_steps"]
    assert spec.resolve("standard", 10)["inner_steps"] == spec.per_ipc[10]["inner_steps"]
    assert spec.resolve("cpu", 10, {"inner_steps": 3})["inner_steps"] == 3
    assert "per_ipc" not in spec.resolve("cpu", 10)


def test_distilled_set_records_learned_lr_and_soft_labels(tmp_path, accelerator):
    from distilkit.config import DistillConfig
    from distilkit.distilled import DistilledSet
    from distilkit.pipeline import distill

    out = distill(DistillConfig(method="bptt", ipc=1, preset="smoke", out=str(tmp_path / "set")), accelerator)
    dset = DistilledSet.load(out)
    assert dset.learned_lr is not None and dset.soft_labels.shape == (10, 10)
    assert dset.card_metadata()["labels"]["type"] == "soft"
