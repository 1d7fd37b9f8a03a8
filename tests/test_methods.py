from __future__ import annotations

import pytest
import torch
from conftest import Crash, CrashingCheckpointer

from distilkit.checkpoint import Checkpointer
from distilkit.errors import DistilkitError
from distilkit.methods import RunContext, get_method, list_methods


def run_method(name, real, accelerator, seed=0, ipc=2, checkpointer=None, resume=False, **args):
    spec = get_method(name)
    cfg = spec.resolve("smoke", ipc, args)
    return spec.fn(real, ipc, cfg, RunContext(accelerator, seed, checkpointer, resume))


def test_registry_has_the_foundation_methods():
    assert {"random", "herding", "kcenter", "dm"} <= set(list_methods())
    with pytest.raises(DistilkitError, match="unknown method"):
        get_method("nope")
    with pytest.raises(DistilkitError, match="unknown option"):
        get_method("dm").resolve("smoke", 10, {"iteratons": 3})


@pytest.mark.parametrize("name", list_methods())
def test_every_method_on_smoke_preset_is_deterministic(name, embedded_real, accelerator):
    out = run_method(name, embedded_real, accelerator)
    c, h, w = embedded_real.image_shape
    assert out.images.shape == (20, c, h, w) and out.images.dtype == torch.float32
    assert torch.equal(out.labels, torch.arange(10).repeat_interleave(2))
    assert torch.isfinite(out.images).all()
    again = run_method(name, embedded_real, accelerator)
    assert torch.equal(out.images, again.images)
    other = run_method(name, embedded_real, accelerator, seed=1)
    if name != "herding":  # herding is deterministic given the features; its features depend on the seed
        assert not torch.equal(out.images, other.images)


def test_selection_methods_pick_real_images_of_their_class(embedded_real, accelerator):
    for name in ("random", "herding", "kcenter"):
        out = run_method(name, embedded_real, accelerator)
        picked = torch.tensor(out.history["selected_indices"])
        assert torch.equal(embedded_real.train_labels[picked], out.labels)
        assert torch.equal(embedded_real.batch(picked), out.images)
        assert len(set(picked.tolist())) == len(picked)


def test_dm_moves_images_and_lowers_the_loss(embedded_real, accelerator):
    out = run_method("dm", embedded_real, accelerator, iterations=30, batch_real=32, log_every=1)
    start = run_method("dm", embedded_real, accelerator, iterations=0)
    assert not torch.equal(out.images, start.images)
    losses = out.history["loss"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_dm_resume_is_bit_identical(embedded_real, accelerator, tmp_path):
    full = run_method("dm", embedded_real, accelerator, iterations=7)
    crashing = CrashingCheckpointer(tmp_path / "ckpt", "fp", every=2, crash_at=4)
    with pytest.raises(Crash):
        run_method("dm", embedded_real, accelerator, iterations=7, checkpointer=crashing)
    resumed = run_method("dm", embedded_real, accelerator, iterations=7, resume=True,
                         checkpointer=Checkpointer(tmp_path / "ckpt", "fp", every=2))
    assert torch.equal(full.images, resumed.images)
    assert resumed.history["iteration"] == full.history["iteration"]
    with pytest.raises(DistilkitError, match="different configuration"):
        run_method("dm", embedded_real, accelerator, iterations=7, resume=True,
                   checkpointer=Checkpointer(tmp_path / "ckpt", "other", every=2))


def test_dm_chunked_step_equals_one_pass(embedded_real, accelerator):
    from distilkit.data.dsa import DSA
    from distilkit.methods.dm import matching_step
    from distilkit.models import create_model

    torch.manual_seed(0)
    net = create_model("convnet-w8-d2", 1, 10, (28, 28)).requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    indices = embedded_real.sample_per_class(6, gen)
    dsa = DSA()
    params = dsa.sample(10, gen)
    labels = torch.arange(10).repeat_interleave(3)
    grads, losses = [], []
    for real_chunk, syn_chunk in ((0, 0), (7, 4), (32, 64)):
        images = embedded_real.batch(embedded_real.sample_per_class(3, torch.Generator().manual_seed(1)).reshape(-1))
        images.requires_grad_(True)
        losses.append(matching_step(net, embedded_real, indices, images, labels, dsa, params, accelerator, 6,
                                    real_chunk, syn_chunk))
        grads.append(images.grad)
    for loss, grad in zip(losses[1:], grads[1:], strict=True):
        assert loss == pytest.approx(losses[0], rel=1e-5)
        # different batch sizes pick different conv kernels: compare at float32 noise of the gradient's scale
        torch.testing.assert_close(grad, grads[0], rtol=1e-3, atol=1e-4 * grads[0].abs().max().item())


def test_dm_never_chunks_a_batchnorm_network(embedded_real, accelerator):
    """BatchNorm embeds an image by its batch's statistics: asked for small chunks, DM still runs
    each side as one batch, so the loss and gradient equal the unchunked step's."""
    from distilkit.methods.dm import has_batch_statistics, matching_step
    from distilkit.models import create_model

    torch.manual_seed(0)
    net = create_model("convnet-w8-d2-bn", 1, 10, (28, 28)).requires_grad_(False).train()
    assert has_batch_statistics(net) and not has_batch_statistics(create_model("convnet-w8-d2", 1, 10, (28, 28)))
    indices = embedded_real.sample_per_class(6, torch.Generator().manual_seed(0))
    labels = torch.arange(10).repeat_interleave(3)
    grads, losses = [], []
    for real_chunk, syn_chunk in ((0, 0), (7, 3)):
        images = embedded_real.batch(embedded_real.sample_per_class(3, torch.Generator().manual_seed(1)).reshape(-1))
        images.requires_grad_(True)
        losses.append(matching_step(net, embedded_real, indices, images, labels, None, None, accelerator, 6,
                                    real_chunk, syn_chunk))
        grads.append(images.grad)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6 * grads[0].abs().max().item())


def test_methods_verbose_names_where_each_default_comes_from():
    from click.testing import CliRunner

    from distilkit.cli import cli, methods  # noqa: F401  (register the command)

    done = CliRunner().invoke(cli, ["methods", "dm", "--verbose", "--preset", "cpu"])
    assert done.exit_code == 0, done.output
    lines = {line.split(":")[0]: line for line in done.output.splitlines() if "#" in line}
    assert "# preset cpu: sized for 2 CPU cores" in lines["iterations"]
    assert "# default: DM code" in lines["lr_images"]
    spec = get_method("bptt")
    assert spec.source_of("inner_steps", "cpu", 10).startswith("preset cpu, IPC>=10: tuned")
    assert spec.source_of("inner_steps", "standard", 50) == "IPC>=50: " + spec.sources["inner_steps"]
    assert spec.source_of("log_every", "standard", 10) == "default"


def test_minibatches_walk_one_permutation_per_epoch_including_the_tail():
    """10 images at batch 6 (batch < n < 2 * batch): each epoch is one batch of 6 and one of 4, and
    together they hold every image exactly once (no fresh random subset per step)."""
    from distilkit.train import TrainConfig, training_steps

    seen: list[list[int]] = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(1, 2)

        def forward(self, x):
            seen.append(x[:, 0, 0, 0].round().long().tolist())
            return self.linear(x[:, 0, 0, :1])

    images = torch.arange(10).float().view(10, 1, 1, 1)
    cfg = TrainConfig(epochs=3, batch_size=6, dsa=False)
    assert cfg.steps_for(10) == 6
    for _ in training_steps(Recorder(), images, torch.arange(10) % 2, cfg, torch.Generator().manual_seed(0)):
        pass
    assert [len(b) for b in seen] == [6, 4] * 3
    for epoch in range(3):
        assert sorted(seen[2 * epoch] + seen[2 * epoch + 1]) == list(range(10))
    assert seen[0] != seen[2]  # a fresh permutation every epoch
