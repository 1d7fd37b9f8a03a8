"""The one preset vocabulary: every command, method, audit, expert and evaluation table speaks it.

A preset names how big a run is, once for the whole toolkit:

- ``standard``: the literature's faithful settings (a method's published defaults, the usual
  1000-epoch evaluation);
- ``paper``: the protocols of "What is Dataset Distillation Learning?" (Yang et al., ICML 2024);
- ``cpu``: the same shape, sized to finish in minutes on two CPU cores (the default);
- ``smoke``: tiny widths and a few steps, for tests.

Every table of per-preset values (a method's or an audit's overrides, the expert recipes, the
evaluation protocols) is checked against :data:`PRESETS` where it is defined or registered, so a
misspelt preset key fails at once. A table need not list every preset: a preset without an entry
uses the table's defaults, so every command accepts every preset.
"""

from __future__ import annotations

from collections.abc import Iterable

from distilkit.errors import ConfigError

PRESETS: tuple[str, ...] = ("standard", "paper", "cpu", "smoke")
DEFAULT_PRESET = "cpu"


def check_preset(name: object) -> str:
    """``name`` if it is one of :data:`PRESETS`, else a one-line :class:`ConfigError`."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return name  # type: ignore[return-value]


def check_preset_keys(keys: Iterable[object], where: str) -> None:
    """Refuse a per-preset table (``where`` names it) whose keys are not all in the vocabulary."""
    unknown = [key for key in keys if key not in PRESETS]
    if unknown:
        raise ConfigError(f"{where}: preset(s) {', '.join(map(repr, unknown))} are not in the preset vocabulary "
                          f"({', '.join(PRESETS)})")
