"""Run configurations: dataclasses with YAML in/out, strict keys and presets.

Precedence, lowest first: dataclass defaults < the preset < a YAML file < command-line flags.
``None`` never overrides (so an unset flag leaves the method's own default in place). Unknown
keys are an error, in files and in ``method_args``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from distilkit.data.sources import SourceConfig
from distilkit.errors import DistilkitError

PRESETS = ("standard", "paper", "cpu", "smoke")
DEFAULT_PRESET = "cpu"


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

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _merge_into(obj: Any, values: dict, where: str) -> Any:
    """Return a copy of dataclass ``obj`` with ``values`` applied (nested dataclasses by dict)."""
    known = {f.name: f for f in fields(obj)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise DistilkitError(f"unknown key(s) in {where}: {', '.join(unknown)} "
                             f"(known: {', '.join(known)})")
    updates = {}
    for key, value in values.items():
        if value is None:
            continue
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise DistilkitError(f"{where}.{key} must be a mapping")
            value = _merge_into(current, value, f"{where}.{key}")
        elif key == "method_args":
            if not isinstance(value, dict):
                raise DistilkitError(f"{where}.method_args must be a mapping")
            value = {**current, **value}
        updates[key] = value
    return dataclasses.replace(obj, **updates)


def load_yaml_file(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DistilkitError(f"config file {path} not found") from err
    except yaml.YAMLError as err:
        raise DistilkitError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DistilkitError(f"config file {path} must hold a mapping at the top level")
    return data


def resolve_distill_config(file: str | Path | None = None, **flags: Any) -> DistillConfig:
    """Defaults < YAML file < flags. Source flags may be given flat (``source=``, ``subset=`` ...)."""
    cfg = DistillConfig()
    if file is not None:
        cfg = _merge_into(cfg, load_yaml_file(file), str(file))
    source_keys = {f.name for f in fields(SourceConfig)}
    source_flags = {k: flags.pop(k) for k in list(flags) if k in source_keys}
    cfg = _merge_into(cfg, {**flags, "source": source_flags}, "flags")
    if cfg.preset not in PRESETS:
        raise DistilkitError(f"unknown preset {cfg.preset!r}; choose from {', '.join(PRESETS)}")
    if cfg.ipc < 1:
        raise DistilkitError("--ipc must be at least 1")
    return cfg


def parse_key_values(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("iterations=100", "dsa=false")`` -> {"iterations": 100, "dsa": False} (YAML scalars)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise DistilkitError(f"--arg expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
