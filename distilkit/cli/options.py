"""Options that several commands share, defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from distilkit.presets import DEFAULT_PRESET, PRESETS


class PresetChoice(click.Choice):
    """A name from the one preset vocabulary (:data:`distilkit.presets.PRESETS`); an unknown name fails with
    the library's own message, so the CLI and a notebook say the same thing."""

    def __init__(self) -> None:
        super().__init__(PRESETS)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value in PRESETS:
            return value
        self.fail(f"unknown preset {value!r}; choose from {', '.join(PRESETS)}", param, ctx)


def preset_option(help: str, *, flag: str = "--preset", default: str | None = DEFAULT_PRESET) -> Callable:
    """``--preset`` (or ``flag``): one of the vocabulary, ``default`` when not given (None: unset)."""
    return click.option(flag, type=PresetChoice(), default=default, show_default=default is not None, help=help)
