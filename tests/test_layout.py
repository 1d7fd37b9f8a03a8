"""The layout of DESIGN.md: card templates in the top-level cards/ folder, found from a checkout, an
editable install and a wheel; the package list in pyproject.toml names every package folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distilkit import card
from distilkit.errors import DistilkitError

ROOT = Path(__file__).resolve().parents[1]


def test_the_card_template_is_found_in_the_top_level_cards_folder():
    assert card.templates_dir() == ROOT / "cards"
    assert (ROOT / "cards" / card.CARD_TEMPLATE).is_file()
    assert not (ROOT / "distilkit" / "cards").exists()


@pytest.mark.parametrize("layout", ["wheel", "checkout"])
def test_the_template_lookup_finds_both_layouts(layout, tmp_path, monkeypatch):
    """A wheel installs the templates as site-packages/distilkit/cards; a checkout or an editable install
    keeps them in cards/ beside the package."""
    package = tmp_path / "distilkit"
    templates = package / "cards" if layout == "wheel" else tmp_path / "cards"
    templates.mkdir(parents=True)
    shutil.copy(ROOT / "cards" / card.CARD_TEMPLATE, templates)
    monkeypatch.setattr(card, "__file__", str(package / "card.py"))
    assert card.templates_dir() == templates


def test_a_missing_template_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(card, "__file__", str(tmp_path / "distilkit" / "card.py"))
    with pytest.raises(DistilkitError, match="card template distilled_card.md.j2 is missing"):
        card.templates_dir()


def test_pyproject_ships_every_package_and_the_templates():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "distilkit").rglob("*.py")}
    assert set(setuptools["packages"]) == folders | {"distilkit.cards"}
    assert setuptools["package-dir"] == {"distilkit.cards": "cards"}
    patterns = setuptools["package-data"]["distilkit.cards"]
    assert all(any(Path(t).match(p) for p in patterns) for t in (ROOT / "cards").iterdir())
    tables = setuptools["package-data"]["distilkit.methods"]  # the built-in methods' option tables
    assert all(any(t.match(p) for p in tables) for t in (ROOT / "distilkit" / "methods").glob("*.yaml"))
