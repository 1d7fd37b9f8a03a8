"""The outer loop every learning method runs (dm, dc/dsa, cafe, krr, bptt, mtt).

A method sets up what it learns and hands :meth:`LearningLoop.run` its step and its checkpoint
state; the loop does the rest, the same way for every method:

- resume: with ``--resume`` and a checkpoint, the state's ``restore`` puts the learned tensors and
  optimizer state back, and the loop continues at the saved step with the saved history;
- randomness: step ``it`` gets ``ctx.step_generator(it)``, so a resumed run draws exactly what an
  uninterrupted one does (no RNG state needs saving);
- checkpoints: before every ``checkpoint_every``-th step (on the main process) the state's tensors
  and JSON entries are saved with the step and the history;
- history and progress: the values a step returns are recorded every ``log_every`` steps and at
  the last one, and shown on the tqdm bar;
- non-finite checks: a step that returns a NaN or infinite value stops the run with one
  :class:`DistilkitError` line naming the value, the iteration and what to lower.

The real batch is sharded across processes: :meth:`LearningLoop.rank_slice` is this rank's share of
every class's draw (the draw itself is the same on every rank).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from tqdm.auto import tqdm

from distilkit.errors import DistilkitError
from distilkit.methods._registry import RunContext

Step = Callable[[int, torch.Generator], dict[str, float]]


class Checkpointed(Protocol):
    """What a method's checkpoint holds (see :mod:`distilkit.methods._learnable` for the shared layouts)."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors to save (learned tensors, optimizer state, networks)."""

    def entries(self) -> dict:
        """JSON entries saved beside ``step`` and ``history`` (e.g. a model pool's ages)."""

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Put back what :meth:`tensors` and :meth:`entries` saved."""


class LearningLoop:
    """``cfg["iterations"]`` steps of one method with resume, checkpoints, history and checks.

    ``logged`` names the values a step returns, in history order, as an error message says them
    (e.g. ``{"loss": "matching loss", "lr": "learned lr"}``); ``hint`` says what to change when
    one of them stops being finite (e.g. ``"lower lr_images"``).
    """

    def __init__(self, name: str, ctx: RunContext, cfg: dict, logged: dict[str, str], hint: str) -> None:
        self.name, self.ctx = name, ctx
        self.iterations, self.log_every = int(cfg["iterations"]), int(cfg["log_every"])
        self.logged, self.hint = logged, hint
        self.start = 0
        self.history: dict[str, list] = {"iteration": [], **{key: [] for key in logged}}

    def rank_slice(self, batch: int) -> slice:
        """This process's share of a per-class batch of ``batch`` (ceil(batch / processes) each)."""
        acc = self.ctx.accelerator
        per_rank = -(-batch // acc.num_processes)
        return slice(acc.process_index * per_rank, (acc.process_index + 1) * per_rank)

    def run(self, step: Step, state: Checkpointed) -> dict[str, list]:
        """Resume if asked, run the remaining steps, return the history."""
        ctx, checkpointer = self.ctx, self.ctx.checkpointer
        if ctx.resume and checkpointer is not None and (saved := checkpointer.load()) is not None:
            tensors, saved_state = saved
            state.restore(tensors, saved_state)
            self.start, self.history = saved_state["step"], saved_state["history"]
        bar = tqdm(range(self.start, self.iterations), desc=self.name, disable=not ctx.show_progress,
                   initial=self.start, total=self.iterations)
        for it in bar:
            if checkpointer is not None and checkpointer.due(it, self.iterations) and it > self.start:
                if ctx.accelerator.is_main_process:
                    checkpointer.save(state.tensors(), {"step": it, "history": self.history, **state.entries()})
            values = step(it, ctx.step_generator(it))
            self._check(it, values)
            if it % self.log_every == 0 or it == self.iterations - 1:
                self.history["iteration"].append(it)
                for key in self.logged:
                    self.history[key].append(values[key])
                bar.set_postfix({key: f"{value:.4g}" for key, value in values.items()})
        return self.history

    def _check(self, it: int, values: dict[str, float]) -> None:
        for key, label in self.logged.items():
            if not math.isfinite(values[key]):
                others = ", ".join(f"{self.logged[k]} {v:.3g}" for k, v in values.items() if k != key)
                ckpt = self.ctx.checkpointer
                saving = ckpt is not None and ckpt.directory is not None and ckpt.every > 0
                kept = "; the last checkpoint is kept" if saving else ""
                raise DistilkitError(f"{self.name}: the {label} became {values[key]:.3g} at iteration {it}"
                                     f"{f' ({others})' if others else ''}; {self.hint}{kept}")
