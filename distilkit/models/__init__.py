"""Models: the ConvNet family, a factory that also resolves ``timm/<name>``, the switch of the fast CPU paths."""

from distilkit.models.convnet import ConvNet
from distilkit.models.factory import (
    UnknownModelError,
    create_model,
    model_has_embed,
    parse_convnet_name,
    parse_model_list,
    validate_model_name,
)
from distilkit.models.fast_cpu import fast_cpu_enabled, set_fast_cpu

__all__ = ["ConvNet", "UnknownModelError", "create_model", "fast_cpu_enabled", "model_has_embed", "parse_convnet_name",
           "parse_model_list", "set_fast_cpu", "validate_model_name"]
