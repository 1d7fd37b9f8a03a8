"""The method registry: ``@register_method`` (timm's ``register_model`` pattern).

A method is a function ``distill(real, ipc, cfg, ctx) -> MethodOutput`` plus its defaults as data:
``defaults`` (the faithful, ``standard`` values), per-dataset-family overrides, per-preset
overrides (keys from the one preset vocabulary, :mod:`distilkit.presets`, checked at registration;
a preset without an entry uses the defaults) and per-IPC overrides; a preset may carry its own
per-IPC table under the key ``per_ipc``. Resolution order: defaults < dataset family < preset <
IPC < the preset's IPC table < the user's ``method_args``; unknown user keys are an error and
``None`` never overrides. User values are checked against the type and range the option's tables
give it (:mod:`distilkit.validation`), model names against the model factory, and a method
declared ``needs_embed`` refuses a model without ``embed`` (a timm model) -- all before any data
is loaded.

Dataset families (:func:`dataset_families`): ``rgb`` or ``grayscale`` by channels, plus ``digits``
for digit datasets (MNIST, SVHN, USPS). Every method with a ``dsa_strategy`` drops DSA's flip for
``digits`` (DSA README: flip is not good for digit datasets); a family table may also name the
method's default ``pixel_space`` (used when the run does not choose one), e.g. MTT's ZCA for RGB.

``sources`` says where defaults come from (key -> provenance, e.g. "DC code (VICO-UoE)", "tuned for
the cpu preset on embedded FMNIST"); ``distilkit methods NAME --verbose`` prints it beside each value.

The built-in methods keep these tables, with their family, summary and citation, as data beside their
code (``dm.py`` -> ``dm.yaml``, read by :func:`method_tables`): a method module holds only its
algorithm, and a change of a default or its provenance is a reviewable one-line data change. A user's
method passes them in code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from distilkit.data.dsa import DIGIT_STRATEGY, is_digit_dataset
from distilkit.errors import ConfigError
from distilkit.models.factory import model_has_embed
from distilkit.presets import check_preset, check_preset_keys
from distilkit.registry import RegisteredSpec, Registry

FAMILIES = ("selection", "performance-matching", "distribution-matching", "parameter-matching")
DATASET_FAMILIES = ("rgb", "grayscale", "digits")
DIGIT_DSA_STRATEGY = DIGIT_STRATEGY
# Family defaults every method shares (for the keys it has), with their provenance.
SHARED_FAMILY_DEFAULTS = {"digits": {"dsa_strategy": DIGIT_DSA_STRATEGY}}
SHARED_FAMILY_SOURCES = {"digits.dsa_strategy": "DSA README: no flip for digit datasets (MNIST, SVHN)"}


def dataset_families(real: Any) -> tuple[str, ...]:
    """The dataset families of ``real`` (a RealData): ("rgb" | "grayscale"[, "digits"])."""
    families = ["rgb" if real.image_shape[0] == 3 else "grayscale"]
    info = getattr(real, "info", {}) or {}
    if any(is_digit_dataset(str(info.get(k) or "")) for k in ("id", "hub_id")):
        families.append("digits")
    return tuple(families)


TABLE_KEYS = ("family", "summary", "needs_embed", "citation", "defaults", "per_family", "presets", "per_ipc", "sources")


class _TablesLoader(yaml.SafeLoader):
    """YAML's safe loader that also reads ``1e-5`` as a float (YAML 1.1 wants ``1.0e-5``)."""


_TablesLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def method_tables(module_file: str) -> dict[str, Any]:
    """What a built-in method module declares beside it (``.../dm.py`` -> ``.../dm.yaml``): any of its
    ``family``, ``summary``, ``needs_embed``, ``citation`` and option tables (``defaults``, ``per_family``,
    ``presets``, ``per_ipc``, ``sources``), as :func:`register_method` takes them."""
    path = Path(module_file).with_suffix(".yaml")
    tables = yaml.load(path.read_text(encoding="utf-8"), Loader=_TablesLoader) or {}
    unknown = sorted(set(tables) - set(TABLE_KEYS))
    if unknown:
        raise ConfigError(f"{path.name}: unknown table(s) {', '.join(unknown)}; known: {', '.join(TABLE_KEYS)}")
    return tables


@dataclass
class MethodOutput:
    """What a method hands back: images in the run's pixel space, labels, optional learned values."""

    images: torch.Tensor
    labels: torch.Tensor
    soft_labels: torch.Tensor | None = None
    learned_lr: float | None = None
    history: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class MethodSpec(RegisteredSpec):
    family: str = "selection"
    per_ipc: dict[int, dict[str, Any]] = field(default_factory=dict)
    citation: str = ""
    sources: dict[str, str] = field(default_factory=dict)
    needs_embed: bool = False  # the method calls ``model.embed`` (feature statistics, kernels, selection)
    per_family: dict[str, dict[str, Any]] = field(default_factory=dict)

    def family_tables(self, families: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
        """(family, overrides) in application order: shared family defaults for this method's keys, then its own."""
        tables = []
        for family in families:
            table = {k: v for k, v in SHARED_FAMILY_DEFAULTS.get(family, {}).items() if k in self.defaults}
            table.update(self.per_family.get(family, {}))
            if table:
                tables.append((family, table))
        return tables

    def default_pixel_space(self, families: tuple[str, ...] = ()) -> str | None:
        """The pixel space this method's family tables ask for (None: no preference)."""
        space = None
        for _, table in self.family_tables(families):
            space = table.get("pixel_space", space)
        return space

    def source_of(self, key: str, preset: str, ipc: int, families: tuple[str, ...] = ()) -> str:
        """Where the resolved value of ``key`` for (preset, IPC, dataset families) comes from."""
        preset_cfg = self.presets.get(preset, {})
        preset_ipc = [k for k in sorted(preset_cfg.get("per_ipc", {})) if k <= ipc]
        if preset_ipc and key in preset_cfg["per_ipc"][preset_ipc[-1]]:
            layer = f"preset {preset}, IPC>={preset_ipc[-1]}"
        elif any(key in self.per_ipc[k] for k in sorted(self.per_ipc) if k <= ipc):
            layer = f"IPC>={max(k for k in self.per_ipc if k <= ipc and key in self.per_ipc[k])}"
        elif key in preset_cfg:
            layer = f"preset {preset}"
        elif family := next((f for f, t in reversed(self.family_tables(families)) if key in t), None):
            note = (self.sources.get(f"{family}.{key}") or SHARED_FAMILY_SOURCES.get(f"{family}.{key}"))
            return f"dataset family {family}: {note}" if note else f"dataset family {family}"
        else:
            layer = "default"
        note = self.sources.get(f"{preset}.{key}") or (self.sources.get(key) if layer != f"preset {preset}" else None)
        return f"{layer}: {note}" if note else layer

    def tables(self) -> list[dict[str, Any]]:
        """Every table of defaults: the values each option takes somewhere (for type and range checks)."""
        out = [self.defaults, *self.per_ipc.values()]
        out.extend({k: v for k, v in table.items() if k != "pixel_space"} for table in self.per_family.values())
        for preset_cfg in self.presets.values():
            out.append({k: v for k, v in preset_cfg.items() if k != "per_ipc"})
            out.extend(preset_cfg.get("per_ipc", {}).values())
        return out

    def resolve(self, preset: str, ipc: int, user_args: dict[str, Any] | None = None,
                families: tuple[str, ...] = ()) -> dict[str, Any]:
        """The method's options for (preset, IPC, dataset ``families``) with ``user_args`` applied and checked."""
        check_preset(preset)
        if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
            raise ConfigError(f"--ipc must be an integer of at least 1, got {ipc!r}")
        cfg = dict(self.defaults)
        for _, table in self.family_tables(families):
            cfg.update({k: v for k, v in table.items() if k != "pixel_space"})
        preset_cfg = dict(self.presets.get(preset, {}))
        preset_ipc = preset_cfg.pop("per_ipc", {})
        cfg.update(preset_cfg)
        for table in (self.per_ipc, preset_ipc):
            ipc_keys = [k for k in sorted(table) if k <= ipc]
            if ipc_keys:
                cfg.update(table[ipc_keys[-1]])
        user_args = {k: v for k, v in (user_args or {}).items() if v is not None}
        model = user_args.get("model", cfg.get("model"))
        if self.needs_embed and isinstance(model, str) and not model_has_embed(model):
            raise ConfigError(f"method {self.name!r} needs a ConvNet model (it uses the embedding, embed(), which "
                              f"{model!r} lacks); e.g. --arg model=convnet-w32")
        return self.with_user_options(cfg, user_args, self.tables(), known_hint=True)


_REGISTRY: Registry[MethodSpec] = Registry("method")


def register_method(
    name: str,
    *,
    family: str,
    summary: str,
    defaults: dict[str, Any],
    presets: dict[str, dict[str, Any]] | None = None,
    per_ipc: dict[int, dict[str, Any]] | None = None,
    citation: str = "",
    sources: dict[str, str] | None = None,
    needs_embed: bool = False,
    per_family: dict[str, dict[str, Any]] | None = None,
) -> Callable[[Callable[..., MethodOutput]], Callable[..., MethodOutput]]:
    """Register ``fn`` as method ``name`` with its option tables (see the module docstring). The tables are
    checked here: the family, the dataset families and the preset keys must be known ones."""
    if family not in FAMILIES:
        raise ConfigError(f"method {name!r}: unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    if set(per_family or {}) - set(DATASET_FAMILIES):
        raise ConfigError(f"method {name!r}: unknown dataset families "
                          f"{sorted(set(per_family or {}) - set(DATASET_FAMILIES))}")
    check_preset_keys(presets or {}, f"method {name!r}")

    return _REGISTRY.decorator(name, lambda fn: MethodSpec(name, summary, fn, defaults, presets or {}, family=family,
                                                           per_ipc=per_ipc or {}, citation=citation,
                                                           sources=sources or {}, needs_embed=needs_embed,
                                                           per_family=per_family or {}))


get_method = _REGISTRY.get  # a MethodSpec by name (ConfigError for an unknown one)
list_methods = _REGISTRY.names  # the registered methods, by name


@dataclass
class RunContext:
    """Per-run services a method uses: the accelerator, the seed, checkpointing, progress bars."""

    accelerator: Any
    seed: int
    checkpointer: Any = None
    resume: bool = False

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def show_progress(self) -> bool:
        return bool(self.accelerator.is_local_main_process)

    def step_generator(self, step: int, stream: int = 0) -> torch.Generator:
        """An RNG for one iteration, derived from (seed, step, stream): resumable without RNG state."""
        return torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 31 + stream)
