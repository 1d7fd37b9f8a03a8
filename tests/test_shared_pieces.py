"""The pieces every method and writer shares: the learning loop, seeded models and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import Crash, CrashingCheckpointer
from safetensors.torch import load_file, save_file

from distilkit.checkpoint import Checkpointer
from distilkit.errors import DistilkitError
from distilkit.methods._learnable import MomentumImages
from distilkit.methods._loop import LearningLoop
from distilkit.methods._registry import RunContext
from distilkit.models import create_model
from distilkit.outputs import atomic_path, write_atomic
from distilkit.seeding import ModelShape, seeded_model


def fake_accelerator(rank: int = 0, processes: int = 1) -> SimpleNamespace:
    return SimpleNamespace(num_processes=processes, process_index=rank, is_main_process=rank == 0,
                           is_local_main_process=rank == 0, device=torch.device("cpu"))


def toy_run(checkpointer: Checkpointer | None = None, resume: bool = False, iterations: int = 7,
            poison_at: int | None = None) -> tuple[torch.Tensor, dict]:
    """A toy learner: SGD with momentum pulls a vector towards targets drawn from each step's generator."""
    ctx = RunContext(accelerator=fake_accelerator(), seed=3, checkpointer=checkpointer, resume=resume)
    weights = torch.zeros(4, requires_grad=True)
    optimizer = torch.optim.SGD([weights], lr=0.1, momentum=0.9)
    loop = LearningLoop("toy", ctx, {"iterations": iterations, "log_every": 2}, {"loss": "toy loss"},
                        hint="lower lr")

    def step(it: int, generator: torch.Generator) -> dict[str, float]:
        target = torch.randn(4, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss = ((weights - target) ** 2).sum()
        loss.backward()
        optimizer.step()
        return {"loss": float("nan") if it == poison_at else float(loss.detach())}

    history = loop.run(step, MomentumImages(weights, optimizer))
    return weights.detach().clone(), history


def test_loop_resumed_after_a_checkpoint_equals_the_uninterrupted_run(tmp_path):
    full, full_history = toy_run()
    assert full_history["iteration"] == [0, 2, 4, 6]  # every log_every-th step and the last
    with pytest.raises(Crash):
        toy_run(CrashingCheckpointer(tmp_path, "fp", every=2, crash_at=4))
    tensors, state = Checkpointer(tmp_path, "fp").load()
    assert state["step"] == 4 and set(tensors) == {"images", "momentum", "_step"}
    assert state["history"]["iteration"] == [0, 2]
    resumed, history = toy_run(Checkpointer(tmp_path, "fp", every=2), resume=True)
    assert torch.equal(full, resumed)  # the momentum buffer came back too, or the steps would differ
    assert history == full_history


def test_loop_stops_at_a_non_finite_value_with_one_clear_line(tmp_path):
    with pytest.raises(DistilkitError, match=r"^toy: the toy loss became nan at iteration 3; lower lr; "
                                             r"the last checkpoint is kept$") as err:
        toy_run(Checkpointer(tmp_path, "fp", every=2), poison_at=3)
    assert "\n" not in str(err.value)
    _, state = Checkpointer(tmp_path, "fp").load()
    assert state["step"] == 2
    with pytest.raises(DistilkitError, match=r"at iteration 0; lower lr$"):  # no checkpointing, no promise
        toy_run(poison_at=0)


@pytest.mark.parametrize("processes", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 5, 8])
def test_rank_slices_split_every_class_batch_exactly_once(processes, batch):
    draw = torch.arange(batch)
    shares = []
    for rank in range(processes):
        ctx = RunContext(accelerator=fake_accelerator(rank, processes), seed=0)
        shares.append(draw[LearningLoop("toy", ctx, {"iterations": 1, "log_every": 1}, {}, "").rank_slice(batch)])
    assert torch.equal(torch.cat(shares), draw)
    assert max(len(s) for s in shares) == -(-batch // processes)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_seeded_model_is_determined_by_its_seed_and_leaves_the_callers_rng_alone():
    shape = ModelShape((1, 8, 8), 3)
    state = torch.random.get_rng_state()
    a, b, c = (seeded_model("convnet-w8-d2", shape, seed) for seed in (7, 7, 8))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert _same_weights(a, b) and not _same_weights(a, c)

    # A generator gives up exactly one 62-bit draw, which seeds the initialisation (the methods rely on it).
    generator, reference = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    from_generator = seeded_model("convnet-w8-d2", shape, generator)
    torch.manual_seed(int(torch.randint(2**62, (1,), generator=reference)))
    assert _same_weights(from_generator, create_model("convnet-w8-d2", 1, 3, (8, 8)))
    assert torch.equal(generator.get_state(), reference.get_state())

    torch.random.set_rng_state(state)
    seeded_model("convnet-w8-d2", shape, None)  # architecture only: still no trace on the caller's stream
    assert torch.equal(torch.random.get_rng_state(), state)


def test_write_atomic_writes_text_bytes_or_through_a_writer_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "report.json"
    write_atomic(target, '{"a": 1}')
    write_atomic(tmp_path / "blob.bin", b"\x00\x01")
    write_atomic(tmp_path / "third.txt", lambda tmp: Path(tmp).write_text("via a writer"))
    write_atomic(tmp_path / "t.safetensors", lambda tmp: save_file({"x": torch.ones(2)}, str(tmp)))
    assert target.read_text() == '{"a": 1}' and (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "third.txt").read_text() == "via a writer"
    assert torch.equal(load_file(str(tmp_path / "t.safetensors"))["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "report.json", "t.safetensors", "third.txt"]
    umask = os.umask(0)
    os.umask(umask)
    for name in ("report.json", "t.safetensors"):  # safetensors itself would make a 0600 file
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failing_writer_leaves_the_old_file_whole_and_no_temp_file(tmp_path):
    target = tmp_path / "figure.png"
    target.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".png"  # format by suffix
        assert target.read_bytes() == b"old"  # nothing replaced until the block ends
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
