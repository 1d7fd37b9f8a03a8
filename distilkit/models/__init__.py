"""Models: the ConvNet family and a factory that also resolves ``timm/<name>``."""

from distilkit.models.convnet import ConvNet
from distilkit.models.factory import (
    UnknownModelError,
    create_model,
    model_has_embed,
    parse_convnet_name,
    parse_model_list,
    validate_model_name,
)

__all__ = ["ConvNet", "UnknownModelError", "create_model", "model_has_embed", "parse_convnet_name",
           "parse_model_list", "validate_model_name"]
