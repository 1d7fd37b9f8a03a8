"""Model factory: ``convnet``-style names and ``timm/<name>`` for the cross-architecture pool.

Names: ``convnet`` (ConvNet-3, width 128, instance norm), ``convnet-d4``, ``convnet-w64``,
``convnet-d3-w16-bn`` ... (depth ``dN``, width ``wN``, norm ``in``/``bn``/``ln``/``gn``/``nn``,
pooling ``ap``/``mp``/``np``, in any order), ``alexnet``, ``vgg11``, ``vgg11-bn`` (DC-style, see
:mod:`distilkit.models.classic`), or ``timm/<timm model name>``. timm ResNets get the
CIFAR-style stem (3x3 stride-1 convolution, no max-pool) so that 28-64 px inputs keep enough
spatial resolution.

Every failure is a :class:`~distilkit.errors.ModelError`: a name that resolves to nothing
(:class:`UnknownModelError`) and a model that cannot be built for the given images (too small for
the network's depth, a timm model that refuses the channel count), with timm's or torch's own
error kept as the cause.
"""

from __future__ import annotations

from torch import nn

from distilkit.errors import DistilkitError, ModelError
from distilkit.models.classic import CLASSIC_MODELS
from distilkit.models.convnet import ConvNet

_NORM_CODES = {"in": "instancenorm", "bn": "batchnorm", "ln": "layernorm", "gn": "groupnorm", "nn": "none"}
_POOL_CODES = {"ap": "avgpooling", "mp": "maxpooling", "np": "none"}


class UnknownModelError(ModelError):
    """Raised for a model name the factory cannot resolve (a user error: one line, exit status 2)."""


def parse_convnet_name(name: str) -> dict:
    """``convnet-d3-w64-bn`` -> keyword arguments of :class:`ConvNet`."""
    parts = name.lower().split("-")
    if parts[0] != "convnet":
        raise UnknownModelError(f"unknown model {name!r}")
    kwargs: dict = {}
    for part in parts[1:]:
        if part in _NORM_CODES:
            kwargs["norm"] = _NORM_CODES[part]
        elif part in _POOL_CODES:
            kwargs["pooling"] = _POOL_CODES[part]
        elif part[:1] in ("d", "w") and part[1:].isdigit() and int(part[1:]) >= 1:
            kwargs["depth" if part[0] == "d" else "width"] = int(part[1:])
        else:
            raise UnknownModelError(f"unknown model {name!r}: cannot read {part!r}")
    return kwargs


def validate_model_name(name: str, where: str = "model") -> str:
    """Check that ``name`` names a model :func:`create_model` can build, without building it (a ``timm/``
    name imports timm and asks its registry). Returns the name; raises :class:`UnknownModelError`."""
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(f"{where}: empty model name")
    if name != name.strip():
        raise UnknownModelError(f"{where}: model name {name!r} has surrounding spaces")
    if name.startswith("timm/"):
        import timm

        if not timm.is_model(name[5:]):
            raise UnknownModelError(f"{where}: unknown timm model {name[5:]!r} (see timm.list_models())")
        return name
    if name in CLASSIC_MODELS:
        return name
    try:
        parse_convnet_name(name)
    except UnknownModelError as err:
        raise UnknownModelError(f"{where}: {err}; use convnet[-dN][-wN][-in|bn|ln|gn|nn][-ap|mp|np], "
                                f"{', '.join(CLASSIC_MODELS)} or timm/<name>") from None
    return name


def parse_model_list(text: str, where: str = "--models", allow_cross: bool = False) -> list[str]:
    """``"convnet,timm/resnet18"`` -> the validated names; an empty name (``"convnet,"``) is an error.
    ``allow_cross``: the name ``cross`` (the cross-architecture pool, expanded by the evaluation) passes."""
    names = [part.strip() for part in text.split(",")]
    if not any(names):
        raise UnknownModelError(f"{where}: no model names given")
    for name in names:
        if not name:
            raise UnknownModelError(f"{where}: empty model name in {text!r}")
        if not (allow_cross and name == "cross"):
            validate_model_name(name, where)
    return names


def model_has_embed(name: str) -> bool:
    """Whether the model ``name`` names has ``embed(x)`` (the feature vector before the classifier), which
    distribution matching, kernel ridge regression and the feature-based selections need: the ConvNet
    family has it, timm models do not."""
    return not name.startswith("timm/")


def _adapt_timm_stem(model: nn.Module, in_channels: int) -> None:
    conv1 = getattr(model, "conv1", None)
    if isinstance(conv1, nn.Conv2d) and conv1.kernel_size == (7, 7):
        model.conv1 = nn.Conv2d(in_channels, conv1.out_channels, 3, stride=1, padding=1, bias=False)
        if isinstance(getattr(model, "maxpool", None), nn.Module):
            model.maxpool = nn.Identity()


def create_model(name: str, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    """Build a freshly initialised model by name (uses the global torch RNG for initialisation).
    Raises :class:`ModelError` (never timm's or torch's own errors) when it cannot."""
    if name.startswith("timm/"):
        import timm

        if not timm.is_model(name[5:]):
            raise UnknownModelError(f"unknown timm model {name[5:]!r} (see timm.list_models())")
    try:
        return _build(name, in_channels, num_classes, tuple(image_size))
    except DistilkitError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, AssertionError) as err:  # timm's, torch's, ConvNet's
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot build model {name!r} for {in_channels}x{image_size[0]}x{image_size[1]} images "
                         f"and {num_classes} classes: {detail}") from err


def _build(name: str, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    if name.startswith("timm/"):
        import timm

        model = timm.create_model(name[5:], pretrained=False, num_classes=num_classes, in_chans=in_channels)
        _adapt_timm_stem(model, in_channels)
        return model
    if name in CLASSIC_MODELS:
        return CLASSIC_MODELS[name](in_channels, num_classes, image_size)
    return ConvNet(in_channels, num_classes, image_size, **parse_convnet_name(name))
