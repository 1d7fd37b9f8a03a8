"""Run configurations: dataclasses with YAML in/out, strict keys and presets.

Precedence, lowest first: dataclass defaults < the preset < a YAML file < command-line flags. The
preset names come from the one vocabulary in :mod:`distilkit.presets`.
``None`` never overrides (so an unset flag leaves the method's own default in place). Unknown
keys are an error, in files and in ``method_args``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from distilkit.data.sources import SourceConfig
from distilkit.errors import ConfigError
from distilkit.presets import DEFAULT_PRESET, check_preset
from distilkit.validation import SCIENTIFIC

PIXEL_SPACES = ("raw", "normalized", "zca")


@dataclass
class DistillConfig:
    """Everything that determines a distillation run (stored with its output)."""

    source: SourceConfig = field(default_factory=SourceConfig)
    method: str = "dm"
    ipc: int = 10
    preset: str = DEFAULT_PRESET
    seed: int = 0
    pixel_space: str | None = None  # None: the method's default for the dataset family, else "normalized"
    zca_eps: float = 0.1
    out: str | None = None
    method_args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> DistillConfig:
        """Range checks of the run's own values (the method's options are checked by its spec)."""
        check_preset(self.preset)
        if self.ipc < 1:
            raise ConfigError(f"--ipc must be at least 1, got {self.ipc}")
        if self.pixel_space is not None and self.pixel_space not in PIXEL_SPACES:
            raise ConfigError(f"unknown pixel space {self.pixel_space!r}; choose from {', '.join(PIXEL_SPACES)}")
        if not (math.isfinite(self.zca_eps) and self.zca_eps > 0):
            raise ConfigError(f"zca_eps must be a positive number, got {self.zca_eps}")
        self.source.check()
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _merge_into(obj: Any, values: dict, where: str) -> Any:
    """Return a copy of dataclass ``obj`` with ``values`` applied (nested dataclasses by dict)."""
    known = {f.name: f for f in fields(obj)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)} "
                          f"(known: {', '.join(known)})")
    updates = {}
    hints = typing.get_type_hints(type(obj))
    for key, value in values.items():
        if value is None:
            continue
        current = getattr(obj, key)
        if not dataclasses.is_dataclass(current) and key != "method_args":
            value = _check_type(value, hints[key], f"{where}: {key}")
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key} must be a mapping")
            value = _merge_into(current, value, f"{where}.{key}")
        elif key == "method_args":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.method_args must be a mapping")
            value = {**current, **value}
        updates[key] = value
    return dataclasses.replace(obj, **updates)


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """``value`` if it has the field's type (``X | None`` allows X; an int passes as a float), else an error."""
    allowed = [t for t in (typing.get_args(hint) or (hint,)) if t is not type(None)]
    if isinstance(value, str) and float in allowed and SCIENTIFIC.fullmatch(value):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    elif isinstance(value, int) and float in allowed and int not in allowed:
        return float(value)
    else:
        ok = any(isinstance(value, t) for t in allowed if isinstance(t, type))
    if not ok:
        wanted = " or ".join(_TYPE_NAMES.get(t, getattr(t, "__name__", str(t))) for t in allowed)
        raise ConfigError(f"{where} must be {wanted}, got {value!r}")
    return value


def load_yaml_file(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"config file {path} not found") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def resolve_distill_config(file: str | Path | None = None, **flags: Any) -> DistillConfig:
    """Defaults < YAML file < flags. Source flags may be given flat (``source=``, ``subset=`` ...)."""
    cfg = DistillConfig()
    if file is not None:
        cfg = _merge_into(cfg, load_yaml_file(file), str(file))
    source_keys = {f.name for f in fields(SourceConfig)}
    source_flags = {k: flags.pop(k) for k in list(flags) if k in source_keys}
    cfg = _merge_into(cfg, {**flags, "source": source_flags}, "flags")
    return cfg.check()


def parse_key_values(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("iterations=100", "dsa=false")`` -> {"iterations": 100, "dsa": False} (YAML scalars)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--arg expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        if not key.strip():
            raise ConfigError(f"--arg expects KEY=VALUE, got {pair!r} (no key)")
        if not value.strip():
            raise ConfigError(f"--arg {key.strip()}= has no value (write {key.strip()}=null for none)")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--arg {pair!r}: the value is not valid YAML "
                              f"({str(err).splitlines()[0]})") from None
    return out


def parse_audit_overrides(pairs: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``("mixing.seeds=3",)`` -> {"mixing": {"seeds": 3}}: the ``--arg AUDIT.KEY=VALUE`` options of audits."""
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in parse_key_values(pairs).items():
        if "." not in key:
            raise ConfigError(f"--arg expects AUDIT.KEY=VALUE, got {key!r}")
        audit, option = key.split(".", 1)
        overrides.setdefault(audit, {})[option] = value
    return overrides
