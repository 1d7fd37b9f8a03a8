"""Process-level runtime: the Accelerator, hardware description, version."""

from __future__ import annotations

import ctypes
import os
import platform
from importlib.metadata import PackageNotFoundError, version

import torch


def distilkit_version() -> str:
    try:
        return version("distilkit")
    except PackageNotFoundError:
        return "0+unknown"


def tune_cpu_allocator() -> bool:
    """Keep freed activation buffers in glibc's heap instead of returning them to the OS.

    CPU convolutions allocate tens of MB per layer and call; with glibc's defaults every such buffer
    is a fresh ``mmap`` whose pages fault in on first touch, which costs more than the arithmetic on
    small VMs. Raising the mmap threshold to 32 MB (the ceiling of glibc's own dynamic threshold) and
    the trim threshold to 1 GB lets buffers be reused (measured in examples/bench_dm.py). glibc 2.36
    accepts higher thresholds too, but with the ConvNet's CPU chunks nothing gains from them: a
    DC matching step (ConvNet-3 w128, batch_real 256) had the same page faults and times within noise
    at 1 GB. Opt out with DISTILKIT_TUNE_MALLOC=0.
    Returns whether the setting was applied.
    """
    if os.environ.get("DISTILKIT_TUNE_MALLOC", "1") == "0" or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024) and libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


def make_accelerator():
    """One Accelerator per process. Without an accelerator (GPU, MPS, ...), force CPU mode so that
    ``torchrun`` with several processes forms one multi-CPU group instead of N independent runs, and
    tune the allocator."""
    from accelerate import Accelerator

    from distilkit.models.device_policy import has_accelerator

    if not has_accelerator():
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")
        tune_cpu_allocator()
    return Accelerator(cpu=not has_accelerator())


def describe_hardware(accelerator) -> str:
    if accelerator.device.type == "cuda":
        name = torch.cuda.get_device_name(accelerator.device)
    else:
        name = f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return f"{accelerator.num_processes} x {name}"
