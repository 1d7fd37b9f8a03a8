"""The one registry type behind ``register_method`` and ``register_audit`` (timm's ``register_model``
pattern): a name -> spec table where registering a name again replaces it with a warning, so a
notebook cell that defines a method or an audit can be re-run."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from distilkit.errors import ConfigError
from distilkit.validation import check_options


@dataclass
class RegisteredSpec:
    """What every registered method or audit has: its name, one-line summary, function, default options
    and per-preset overrides."""

    name: str
    summary: str
    fn: Callable
    defaults: dict[str, Any]
    presets: dict[str, dict[str, Any]]

    @property
    def kind(self) -> str:
        return type(self).__name__.removesuffix("Spec").lower()

    def with_user_options(self, cfg: dict[str, Any], given: dict[str, Any], tables: list[dict[str, Any]],
                          known_hint: bool = False) -> dict[str, Any]:
        """``cfg`` updated with the user's ``given`` options (None values dropped), each checked against the
        type and range its values take in ``tables``; an option ``cfg`` lacks is refused."""
        given = {k: v for k, v in given.items() if v is not None}
        unknown = sorted(set(given) - set(cfg))
        if unknown:
            known = f" (known: {', '.join(sorted(cfg))})" if known_hint else ""
            raise ConfigError(f"unknown option(s) for {self.kind} {self.name!r}: {', '.join(unknown)}{known}")
        return {**cfg, **check_options(given, tables, f"{self.kind} {self.name!r}")}


Spec = TypeVar("Spec", bound=RegisteredSpec)


class Registry(Generic[Spec]):
    """Specs by name for one kind of thing (``kind``: "method", "audit"), listed by name or by
    ``order(name, spec)``."""

    def __init__(self, kind: str, order: Callable[[str, Spec], object] | None = None) -> None:
        self.kind = kind
        self._specs: dict[str, Spec] = {}
        self._order = order

    def add(self, name: str, spec: Spec, defined_by: Callable) -> None:
        """Register ``spec`` under ``name`` (called through :meth:`decorator`); a name already taken is
        replaced with a warning that names the new definition (``defined_by``)."""
        if name in self._specs:  # a re-run notebook cell or a reloaded module: the new definition wins (timm)
            warnings.warn(f"{self.kind} {name!r} is already registered; replacing it with "
                          f"{defined_by.__module__}.{defined_by.__qualname__}", stacklevel=4)
        self._specs[name] = spec

    def decorator(self, name: str, make_spec: Callable[[Callable], Spec]) -> Callable[[Callable], Callable]:
        """A decorator that registers the function it decorates as ``make_spec(fn)`` under ``name`` and
        returns the function unchanged."""

        def decorate(fn: Callable) -> Callable:
            self.add(name, make_spec(fn), fn)
            return fn

        return decorate

    def remove(self, name: str) -> None:
        """Forget ``name`` (nothing happens when it is not registered)."""
        self._specs.pop(name, None)

    def get(self, name: str) -> Spec:
        if name not in self._specs:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._specs[name]

    def names(self) -> list[str]:
        if self._order is None:
            return sorted(self._specs)
        return sorted(self._specs, key=lambda name: self._order(name, self._specs[name]))

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
