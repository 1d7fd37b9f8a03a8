"""Checks of user-given option values against the type and range of their defaults.

Methods and audits declare their options as data (defaults plus per-preset and per-IPC tables). A user
value given with ``--arg KEY=VALUE`` (or a YAML file) is checked here before any data is loaded: its type
must be one the option takes somewhere in those tables (``iterations`` is an int, so ``abc`` and ``2.5``
are refused; ``real_chunk`` is ``"auto"`` or a positive int), numbers must be finite, a number whose
defaults are all non-negative may not be negative, counts that size a batch or a loop must be at least 1,
and model names must name a model the factory can build. Everything fails with one :class:`ConfigError` line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from typing import Any

from distilkit.errors import ConfigError

# Integer options that size a batch, a pool or a loop: zero would divide by zero or do nothing silently.
AT_LEAST_ONE = frozenset({
    "batch_real", "batch_train", "outer_loop", "pool_size", "kernel_nets", "max_online_steps", "num_experts",
    "expert_batch", "feature_batch", "syn_steps", "expert_epochs", "expert_train_epochs", "seeds", "runs",
    "subset_pool", "early_runs", "window", "random_sets", "check_size", "top_k", "minibatch",
    "probe_batch", "max_probes", "chunk_size", "model_chunk", "projection_points", "real_sample", "bins",
})
# Options that are probabilities or fractions: strictly between 0 and 1.
OPEN_UNIT = frozenset({"label_confidence", "holdout_fraction"})
# Options whose value is a model name (or, for ``panel``, a list of them).
MODEL_KEYS = frozenset({"model", "coherence_model", "architecture", "panel"})


SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _kind(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


_NAMES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
          "list": "a list", "mapping": "a mapping", "none": "null"}


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_option(key: str, value: Any, examples: Iterable[Any], where: str) -> Any:
    """Check ``value`` for option ``key`` against ``examples`` (the values its default tables give it);
    return the value, an int widened to float where the option is a float."""
    examples = list(examples)
    kinds = {_kind(e) for e in examples}
    if "auto" in examples:  # "auto" stands for a number the code picks (e.g. a chunk size)
        kinds.add("int")
    kind = _kind(value)
    if not kinds or kinds == {"none"} or value is None:
        return value
    if kind == "str" and "float" in kinds and SCIENTIFIC.fullmatch(value):
        value, kind = float(value), "float"  # YAML 1.1 reads 1e-5 (no dot) as a string
    if kind == "int" and "int" not in kinds and "float" in kinds:
        value, kind = float(value), "float"
    if kind not in kinds:
        wanted = " or ".join(sorted(_NAMES.get(k, k) for k in kinds - {"none"}))
        raise ConfigError(f"{where}: {key} must be {wanted}, got {_describe(value)}")
    if kind in ("int", "float"):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {key} must be a finite number, got {value}")
        numbers = [e for e in examples if _kind(e) in ("int", "float")]
        if key in OPEN_UNIT and not 0.0 < value < 1.0:
            raise ConfigError(f"{where}: {key} must be between 0 and 1 (exclusive), got {value}")
        if (key in AT_LEAST_ONE or "auto" in examples) and kind == "int" and value < 1:
            raise ConfigError(f"{where}: {key} must be >= 1, got {value}")
        if value < 0 and numbers and all(e >= 0 for e in numbers):
            raise ConfigError(f"{where}: {key} must not be negative, got {value}")
    elif kind == "list":
        items = [item for e in examples if _kind(e) == "list" for item in e]
        value = [check_option(key, item, items, where) for item in value] if items else list(value)
    elif kind == "mapping":
        tables = [e for e in examples if _kind(e) == "mapping"]
        known = {k for t in tables for k in t}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) in {key}: {', '.join(map(str, unknown))} "
                              f"(known: {', '.join(sorted(known))})")
        value = {k: check_option(k, v, [t[k] for t in tables if k in t], f"{where}: {key}") for k, v in value.items()}
    if key in MODEL_KEYS:
        from distilkit.models.factory import validate_model_name

        for name in value if isinstance(value, list) else [value]:
            if isinstance(name, str):
                validate_model_name(name, f"{where}: {key}")
    return value


def check_options(given: dict[str, Any], tables: Iterable[dict[str, Any]], where: str) -> dict[str, Any]:
    """Check every ``given`` option against the values ``tables`` (defaults, presets ...) hold for it.
    Unknown keys are the caller's to report (it knows the wording); they pass through unchecked."""
    tables = list(tables)
    return {key: check_option(key, value, [t[key] for t in tables if key in t], where)
            for key, value in given.items()}


def env_number(name: str, default: float, kind: type = float, minimum: float = 0.0) -> float:
    """The number in environment variable ``name`` (``default`` when unset or blank), at least ``minimum``."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a {'whole ' if kind is int else ''}number") from None
    if not number >= minimum:
        raise ConfigError(f"{name}={value!r} must be at least {minimum:g}")
    return number
