"""Trajectory matching (mtt) and expert trajectories: cache, Hub sharing, constant memory, guards, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from hub_server import FakeHub
from meters import SavedTensorMeter
from test_hub import SECRET, _point_clients_at

from distilkit import experts as experts_mod
from distilkit.checkpoint import Checkpointer
from distilkit.cli import cli, distill, experts  # noqa: F401  (register commands)
from distilkit.data.dsa import DSA
from distilkit.data.real import RealData
from distilkit.errors import ConfigError, DistilkitError, HubError
from distilkit.experts import ExpertConfig, Experts, ensure_experts, experts_key, open_experts
from distilkit.hub.experts import fetch_experts, fetch_hub_inputs, push_experts
from distilkit.methods import RunContext, get_method
from distilkit.methods import mtt as mtt_mod
from distilkit.models import create_model

TINY = ExpertConfig(model="convnet-w8-d2", num_experts=2, epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def small_real(embedded_real) -> RealData:
    """30 train images per class of the embedded set (experts on it train in a second or two)."""
    idx = torch.cat([embedded_real.class_indices(c)[:30] for c in range(embedded_real.num_classes)])
    test = torch.arange(200)
    return RealData(embedded_real.train_images[idx], embedded_real.train_labels[idx],
                    embedded_real.test_images[test], embedded_real.test_labels[test], embedded_real.class_names,
                    embedded_real.pixel_space, dict(embedded_real.info))


@pytest.fixture(scope="module")
def tiny_experts(small_real, tmp_path_factory) -> Experts:
    return ensure_experts(small_real, TINY, root=tmp_path_factory.mktemp("experts"), show_progress=False)


def run_mtt(real, accelerator, experts_dir, ipc=1, seed=0, checkpointer=None, resume=False, **args):
    spec = get_method("mtt")
    cfg = spec.resolve("smoke", ipc, {"experts": str(experts_dir), "expert_train_epochs": 2, **args})
    return spec.fn(real, ipc, cfg, RunContext(accelerator, seed, checkpointer, resume))


def test_experts_are_indexed_and_found_again(small_real, tiny_experts, monkeypatch):
    index = json.loads((tiny_experts.folder / "index.json").read_text())
    assert index["key"] == experts_key(small_real, TINY) == tiny_experts.folder.name
    assert [e["file"] for e in index["experts"]] == ["expert-000.safetensors", "expert-001.safetensors"]
    assert index["config"]["momentum"] == 0.0 and index["config"]["lr"] == 0.01 and index["config"]["dsa"]
    trajectory = tiny_experts.trajectory(0)
    assert len(trajectory) == TINY.epochs + 1
    assert not torch.equal(trajectory[0][0], trajectory[-1][0])  # the expert moved
    assert not torch.equal(trajectory[0][0], tiny_experts.trajectory(1)[0][0])  # experts differ

    def no_training(*args, **kwargs):
        raise AssertionError("experts were trained again")

    monkeypatch.setattr(experts_mod, "train_expert", no_training)
    again = ensure_experts(small_real, TINY, root=tiny_experts.folder.parent, show_progress=False)
    assert again.folder == tiny_experts.folder
    assert experts_key(small_real, ExpertConfig(**{**TINY.__dict__, "epochs": 3})) != index["key"]
    with pytest.raises(AssertionError, match="trained again"):  # another recipe is not "found"
        ensure_experts(small_real, ExpertConfig(**{**TINY.__dict__, "seed": 1}), root=tiny_experts.folder.parent,
                       show_progress=False)


def test_interrupted_expert_training_is_finished_not_redone(small_real, tmp_path, monkeypatch):
    cfg = ExpertConfig(model="convnet-w8-d2", num_experts=2, epochs=1, batch_size=128)
    first = ensure_experts(small_real, cfg, root=tmp_path, show_progress=False)
    (first.folder / "index.json").unlink()
    (first.folder / "expert-001.safetensors").unlink()
    trained = []
    real_train = experts_mod.train_expert
    monkeypatch.setattr(experts_mod, "train_expert", lambda real, cfg, i, *a, **k: trained.append(i)
                        or real_train(real, cfg, i, *a, **k))
    ensure_experts(small_real, cfg, root=tmp_path, show_progress=False)
    assert trained == [1]
    assert not list(first.folder.glob(".*tmp*"))


def test_experts_round_trip_through_the_fake_hub(small_real, tiny_experts, accelerator, monkeypatch):
    server = FakeHub().start()
    server.write_tokens = {SECRET}
    try:
        _point_clients_at(monkeypatch, server.url)
        sha = push_experts(tiny_experts.folder, "distilkit-tests/experts", token=SECRET)
        assert len(sha) == 40
        assert json.loads(server.read("distilkit-tests/experts", "index.json"))["key"] == tiny_experts.index["key"]
        loaded = open_experts(fetch_experts("hf://distilkit-tests/experts", token=SECRET))
        assert loaded.folder != tiny_experts.folder and loaded.index == tiny_experts.index
        for got, want in zip(loaded.trajectory(1), tiny_experts.trajectory(1), strict=True):
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        # the run's options are fetched before the method runs: the method gets a folder, the record keeps hf://
        recorded = {"experts": "hf://datasets/distilkit-tests/experts", "iterations": 2}
        fetched = fetch_hub_inputs(recorded, token=SECRET, accelerator=accelerator)
        assert recorded["experts"].startswith("hf://") and fetched["iterations"] == 2
        assert open_experts(fetched["experts"]).index == tiny_experts.index
        assert run_mtt(small_real, accelerator, fetched["experts"], iterations=2).images.shape[0] == 10
        with pytest.raises(ConfigError, match="fetch them first"):  # a method never talks to the Hub
            open_experts("hf://distilkit-tests/experts")
        with pytest.raises(HubError) as err:
            fetch_experts("hf://distilkit-tests/missing", token=SECRET)
        assert "\n" not in str(err.value)
        with pytest.raises(HubError):  # a read-only or wrong token cannot push
            push_experts(tiny_experts.folder, "distilkit-tests/other", token="hf_wrong")
    finally:
        server.stop()


def _tiny_problem(seed: int = 0):
    torch.manual_seed(seed)
    net = create_model("convnet-w4-d1", 1, 3, (12, 12)).double()
    names = [n for n, _ in net.named_parameters()]
    start = [p.detach().clone() for p in net.parameters()]
    target = [p + 0.05 * torch.randn_like(p) for p in start]
    images = torch.randn(9, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(3).repeat_interleave(3)
    return net, names, start, target, images, labels


@pytest.mark.parametrize("soft", [False, True])
def test_constant_memory_gives_the_unrolled_gradient(soft):
    grads = {}
    for memory in ("unrolled", "constant"):
        net, names, start, target, images, labels = _tiny_problem()
        lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
        logits = (torch.randn(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
                  .requires_grad_(True) if soft else None)
        dsa = DSA()
        plan = mtt_mod.draw_plan(9, 4, 6, dsa, torch.Generator().manual_seed(1))  # batch_syn 4 < 9 images
        loss = mtt_mod.trajectory_matching_step(net, names, start, target, images, labels, logits, lr, plan, dsa,
                                                memory)
        grads[memory] = (loss, images.grad, lr.grad, logits.grad if soft else None)
    (loss_u, img_u, lr_u, log_u), (loss_c, img_c, lr_c, log_c) = grads["unrolled"], grads["constant"]
    assert loss_u == pytest.approx(loss_c, rel=1e-12)
    assert img_u.abs().max() > 0 and lr_u.abs() > 0
    torch.testing.assert_close(img_c, img_u, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(lr_c, lr_u, rtol=1e-9, atol=1e-12)
    if soft:
        torch.testing.assert_close(log_c, log_u, rtol=1e-9, atol=1e-12)


def test_constant_memory_stays_flat_while_unrolled_grows():
    peaks = {}
    for memory in ("constant", "unrolled"):
        for steps in (10, 40):
            net, names, start, target, images, labels = _tiny_problem()
            lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
            plan = mtt_mod.draw_plan(9, 4, steps, None, torch.Generator().manual_seed(1))
            meter = SavedTensorMeter()
            with meter.track():
                mtt_mod.trajectory_matching_step(net, names, start, target, images, labels, None, lr, plan, None,
                                                 memory)
            assert meter.live == 0  # every saved tensor was released
            peaks[memory, steps] = meter.peak
    assert peaks["constant", 10] > 0
    assert peaks["constant", 40] == peaks["constant", 10]
    assert peaks["unrolled", 40] > 3 * peaks["unrolled", 10]
    assert peaks["unrolled", 10] > peaks["constant", 10]


def test_mtt_learns_lr_and_moves_images(small_real, tiny_experts, accelerator):
    out = run_mtt(small_real, accelerator, tiny_experts.folder, iterations=3)
    start = run_mtt(small_real, accelerator, tiny_experts.folder, iterations=0)
    assert not torch.equal(out.images, start.images)
    assert out.learned_lr is not None and out.learned_lr > 0 and out.learned_lr != 0.01
    assert out.soft_labels is None and len(out.history["loss"]) == 3
    soft = run_mtt(small_real, accelerator, tiny_experts.folder, iterations=2, soft_labels=True)
    assert soft.soft_labels.shape == (10, 10)
    torch.testing.assert_close(soft.soft_labels.sum(1), torch.ones(10))


def test_experts_of_another_architecture_are_refused(small_real, tiny_experts, accelerator):
    with pytest.raises(DistilkitError, match="convnet-w8-d2"):
        run_mtt(small_real, accelerator, tiny_experts.folder, model="convnet-w4-d1")
    with pytest.raises(DistilkitError, match="needs experts of at least"):
        run_mtt(small_real, accelerator, tiny_experts.folder, max_start_epoch=2, expert_epochs=2)


def test_mtt_resume_is_bit_identical(small_real, tiny_experts, accelerator, tmp_path):
    from test_methods import Crash, CrashingCheckpointer

    args = {"iterations": 5, "soft_labels": True}
    full = run_mtt(small_real, accelerator, tiny_experts.folder, **args)
    crashing = CrashingCheckpointer(tmp_path / "ckpt", "fp", every=2, crash_at=2)
    with pytest.raises(Crash):
        run_mtt(small_real, accelerator, tiny_experts.folder, checkpointer=crashing, **args)
    resumed = run_mtt(small_real, accelerator, tiny_experts.folder, resume=True,
                      checkpointer=Checkpointer(tmp_path / "ckpt", "fp", every=2), **args)
    assert torch.equal(full.images, resumed.images)
    assert torch.equal(full.soft_labels, resumed.soft_labels)
    assert full.learned_lr == resumed.learned_lr
    assert full.history == resumed.history


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(small_real, tiny_experts, accelerator, tmp_path,
                                                                  monkeypatch):
    calls = []
    real_distance = mtt_mod.parameter_distance

    def poisoned(*args):
        calls.append(1)
        value = real_distance(*args)
        return value * float("nan") if len(calls) > 3 else value

    monkeypatch.setattr(mtt_mod, "parameter_distance", poisoned)
    ckpt = Checkpointer(tmp_path / "ckpt", "fp", every=2)
    with pytest.raises(DistilkitError, match="matching loss became nan at iteration 3") as err:
        run_mtt(small_real, accelerator, tiny_experts.folder, iterations=6, checkpointer=ckpt)
    assert "\n" not in str(err.value)
    tensors, state = ckpt.load()
    assert state["step"] == 2 and torch.isfinite(tensors["images"]).all()


def test_negative_learned_lr_stops_the_run(small_real, tiny_experts, accelerator, tmp_path, monkeypatch):
    calls = []
    real_step = mtt_mod.trajectory_matching_step

    def pushes_lr_down(*args, **kwargs):  # from the 3rd iteration on, a huge positive dL/dlr
        loss = real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) >= 3:
            args[7].grad.fill_(1e9)
        return loss

    monkeypatch.setattr(mtt_mod, "trajectory_matching_step", pushes_lr_down)
    ckpt = Checkpointer(tmp_path / "ckpt", "fp", every=1)
    with pytest.raises(DistilkitError, match=r"learned lr became -\S+ at iteration 2 \(must stay finite and > 0\)"):
        run_mtt(small_real, accelerator, tiny_experts.folder, iterations=5, checkpointer=ckpt)
    tensors, state = ckpt.load()
    assert state["step"] == 2 and float(tensors["lr"]) > 0


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.slow  # trains an expert on the whole embedded split: ~30 s alone, minutes on loaded cores
def test_cli_experts_then_distill_stores_the_learned_lr(tmp_path, monkeypatch):
    from distilkit.distilled import DistilledSet

    monkeypatch.setenv("DISTILKIT_CACHE", str(tmp_path / "cache"))
    args = ["experts", "--preset", "smoke", "--num-experts", "1", "--epochs", "1"]
    done = run_cli(*args)
    assert done.exit_code == 0, done.output
    folder = next((tmp_path / "cache" / "experts").iterdir())
    stamp = (folder / "expert-000.safetensors").stat().st_mtime_ns
    again = run_cli(*args, "--out", str(tmp_path / "copy"))
    assert again.exit_code == 0, again.output
    assert (folder / "expert-000.safetensors").stat().st_mtime_ns == stamp  # found, not retrained
    assert Experts.load(tmp_path / "copy").index == Experts.load(folder).index
    out = tmp_path / "set"
    done = run_cli("distill", "--method", "mtt", "--preset", "smoke", "--ipc", "1", "--out", str(out),
                   "--arg", "num_experts=1", "--arg", "iterations=2", "--arg", "expert_train_epochs=1",
                   "--arg", "max_start_epoch=1", "--arg", f"experts={tmp_path / 'copy'}")
    assert done.exit_code == 0, done.output
    saved = DistilledSet.load(out)
    assert saved.learned_lr is not None and math.isfinite(saved.learned_lr) and saved.learned_lr > 0
    assert f"learned_lr: {saved.learned_lr}" in (out / "README.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["experts", "--preset", "smoke", "--num-experts", "0"], "num_experts must be >= 1"),
    (["experts", "--preset", "tiny"], "unknown preset 'tiny'"),
    (["distill", "--method", "mtt", "--preset", "smoke", "--ipc", "1", "--arg", "memory=lots"], "memory must be"),
    (["distill", "--method", "mtt", "--preset", "smoke", "--ipc", "1", "--arg", "experts=/nonexistent/x"],
     "holds no expert trajectories"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    done = CliRunner().invoke(cli, [*args, *(["--out", str(tmp_path / "o")] if args[0] == "distill" else [])])
    assert done.exit_code == 2, done.output
    assert message in done.output and len(done.output.strip().splitlines()) == 1
