"""The layering rules of DESIGN.md, checked in fresh interpreters: importing one part of the house loads
none of the parts it must not depend on, and the set format saves a set from any method name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distilkit.data.pixel_space import PixelSpace
from distilkit.distilled import DistilledSet

ROOT = Path(__file__).resolve().parents[1]

# module imported -> package prefixes that must not be in sys.modules afterwards
RULES: dict[str, tuple[str, ...]] = {
    "distilkit.distilled": ("distilkit.methods", "distilkit.audit", "distilkit.hub", "distilkit.cli"),
    "distilkit.card": ("distilkit.methods", "distilkit.audit", "distilkit.hub", "distilkit.cli"),
    "distilkit.methods": ("distilkit.audit", "distilkit.hub", "distilkit.cli"),
    "distilkit.experts": ("distilkit.methods", "distilkit.audit", "distilkit.hub", "distilkit.cli"),
    "distilkit.data.sources": ("distilkit.methods", "distilkit.audit", "distilkit.hub", "distilkit.cli",
                               "distilkit.models"),
    "distilkit.data.real": ("distilkit.methods", "distilkit.audit", "distilkit.hub", "distilkit.cli",
                            "distilkit.models"),
    "distilkit.models": ("distilkit.methods", "distilkit.audit", "distilkit.hub", "distilkit.cli",
                         "distilkit.data"),
    "distilkit.real_models": ("distilkit.methods", "distilkit.audit", "distilkit.hub", "distilkit.cli"),
    "distilkit.scores": ("distilkit.methods", "distilkit.audit", "distilkit.hub", "distilkit.cli"),
    "distilkit.train": ("distilkit.methods", "distilkit.audit", "distilkit.hub", "distilkit.cli"),
    "distilkit.audit": ("distilkit.methods", "distilkit.cli"),
    "distilkit.audit._report": ("distilkit.methods", "distilkit.cli"),
    "distilkit.hub.repo": ("distilkit.methods", "distilkit.audit", "distilkit.cli"),
    "distilkit.hub.publish": ("distilkit.methods", "distilkit.audit", "distilkit.cli"),
    "distilkit.hub.verify": ("distilkit.methods", "distilkit.audit", "distilkit.cli"),
    "distilkit.hub.experts": ("distilkit.methods", "distilkit.audit", "distilkit.cli"),
    "distilkit.presets": ("distilkit.methods", "distilkit.audit", "distilkit.hub", "distilkit.cli",
                          "distilkit.models", "distilkit.data"),
}


def loaded_after_import(module: str) -> list[str]:
    """The distilkit modules a fresh interpreter has loaded after ``import module`` (this checkout first on
    the path, so the tree under test is the one imported)."""
    code = (f"import importlib, json, sys; importlib.import_module({module!r}); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('distilkit'))))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", sorted(RULES))
def test_importing_a_part_loads_nothing_it_must_not_depend_on(module):
    loaded = loaded_after_import(module)
    assert f"{module}" in loaded or any(m.startswith(f"{module}.") for m in loaded)
    assert all(m == "distilkit" or m.startswith("distilkit.") for m in loaded)
    forbidden = [m for m in loaded for prefix in RULES[module] if m == prefix or m.startswith(prefix + ".")]
    assert not forbidden, f"importing {module} loads {forbidden}"


def test_importing_a_subpackage_leaves_the_top_level_api_unloaded():
    """``distilkit/__init__`` resolves its exports lazily: importing the data package loads only that."""
    assert loaded_after_import("distilkit.data") == ["distilkit", "distilkit.data"]


def _set(method: str, provenance: dict | None = None) -> DistilledSet:
    gen = torch.Generator().manual_seed(0)
    return DistilledSet(images=torch.randn(4, 1, 8, 8, generator=gen), labels=torch.tensor([0, 0, 1, 1]),
                        class_names=["a", "b"], pixel_space=PixelSpace("normalized", [0.5], [0.25]), method=method,
                        ipc=2, source={"id": "my-source", "split": "train"}, provenance=provenance or {})


def test_a_set_from_any_method_name_saves_and_loads(tmp_path):
    dset = _set("my_method")
    dset.save(tmp_path / "s")
    back = DistilledSet.load(tmp_path / "s")
    assert back.method == "my_method" and torch.equal(back.images, dset.images)
    card = (tmp_path / "s" / "README.md").read_text()
    assert "**my_method** (a method not registered in distilkit)" in card


def test_a_registered_method_keeps_its_summary_on_the_card(tmp_path):
    from distilkit.methods import get_method

    _set("dm").save(tmp_path / "s")
    assert f"**dm** ({get_method('dm').summary})" in (tmp_path / "s" / "README.md").read_text()


def test_an_imported_set_saves_with_any_method_name(tmp_path):
    imported = {"format": "npz", "file": "x.npz", "sha256": "0" * 64, "pixel_space": "normalized"}
    _set("someone-elses-method", {"imported": imported}).save(tmp_path / "s")
    assert "imported from a npz file" in (tmp_path / "s" / "README.md").read_text()
