"""Process-level runtime: the Accelerator, hardware description, version."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

import torch


def distilkit_version() -> str:
    try:
        return version("distilkit")
    except PackageNotFoundError:
        return "0+unknown"


def make_accelerator():
    """One Accelerator per process. Without a GPU, force CPU mode so that ``torchrun`` with several
    processes forms one multi-CPU group instead of N independent runs."""
    from accelerate import Accelerator

    if not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")
    return Accelerator(cpu=not torch.cuda.is_available())


def describe_hardware(accelerator) -> str:
    if accelerator.device.type == "cuda":
        name = torch.cuda.get_device_name(accelerator.device)
    else:
        name = f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return f"{accelerator.num_processes} x {name}"
