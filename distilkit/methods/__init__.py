"""Distillation methods, registered by name (``distilkit methods`` lists them)."""

from distilkit.methods import bptt, cafe, dm, gradient_matching, herding, kcenter, krr, mtt, random_subset  # noqa: F401  (registration)
from distilkit.methods._registry import (
    MethodOutput,
    MethodSpec,
    RunContext,
    get_method,
    list_methods,
    register_method,
)

__all__ = ["MethodOutput", "MethodSpec", "RunContext", "get_method", "list_methods", "register_method"]
