"""Checkpoint/resume for long runs: tensors as safetensors plus a JSON state, written atomically.

A checkpoint records a fingerprint of the run's resolved configuration; resuming with a different
configuration is refused instead of silently mixing two runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from distilkit import jsonio
from distilkit.errors import DistilkitError
from distilkit.outputs import atomic_path

TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.json"


class Checkpointer:
    """Saves and restores one run's state in ``directory`` (``None``: checkpointing off)."""

    def __init__(self, directory: Path | None, fingerprint: str, every: int = 0) -> None:
        self.directory = directory
        self.fingerprint = fingerprint
        self.every = every

    def due(self, step: int, total: int) -> bool:
        return self.directory is not None and self.every > 0 and step < total and step % self.every == 0

    def save(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {**{k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                   "_step": torch.tensor(int(state["step"]))}
        # Both files carry the step; a kill between the two renames (tensors first, on leaving the
        # inner block) is detected on load.
        with atomic_path(self.directory / STATE_FILE) as tmp_state, \
                atomic_path(self.directory / TENSORS_FILE) as tmp_tensors:
            save_file(tensors, str(tmp_tensors))
            tmp_state.write_text(jsonio.dumps({**state, "fingerprint": self.fingerprint}))

    def load(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        if self.directory is None or not (self.directory / STATE_FILE).is_file():
            return None
        state = json.loads((self.directory / STATE_FILE).read_text())
        if state.get("fingerprint") != self.fingerprint:
            raise DistilkitError(f"checkpoint in {self.directory} belongs to a different configuration; "
                                 "remove it or run without --resume")
        tensors = load_file(str(self.directory / TENSORS_FILE))
        if int(tensors["_step"].item()) != state["step"]:
            raise DistilkitError(f"checkpoint in {self.directory} is inconsistent; remove it and start over")
        return tensors, state
