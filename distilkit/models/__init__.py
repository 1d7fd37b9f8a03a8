"""Models: the ConvNet family and a factory that also resolves ``timm/<name>``."""

from distilkit.models.convnet import ConvNet
from distilkit.models.factory import UnknownModelError, create_model, parse_convnet_name

__all__ = ["ConvNet", "UnknownModelError", "create_model", "parse_convnet_name"]
