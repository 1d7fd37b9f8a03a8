"""Process-level runtime: the Accelerator, hardware description, version, and the process settings.

Library calls never change process-wide state (environment variables, the allocator, the Hub client):
:func:`configure_process` does that once, and only the ``distilkit`` command's entry point and the
benchmark scripts call it. A notebook that imports distilkit keeps its environment as it was.
"""

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
    the trim threshold to 1 GB lets buffers be reused (measurements: README, "Benchmarks").
    Process-wide: called by :func:`configure_process` only. Opt out with DISTILKIT_TUNE_MALLOC=0.
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


def configure_process() -> None:
    """The process-wide settings of a distilkit process, made once at its entry point (the CLI, a
    benchmark script), never by a library call:

    - without an accelerator (GPU, MPS, ...), ``ACCELERATE_USE_CPU=1`` (unless set), so that every
      ``PartialState`` of the process, including those accelerate creates itself, agrees with
      :func:`make_accelerator`'s CPU mode, and ``torchrun`` with several processes forms one
      multi-CPU group instead of N runs;
    - glibc's allocator thresholds on CPU (:func:`tune_cpu_allocator`);
    - a timeout on every Hub request (:func:`distilkit.hub.repo.configure_hub_http`).
    """
    from distilkit.hub.repo import configure_hub_http
    from distilkit.models.device_policy import has_accelerator

    if not has_accelerator():
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")
        tune_cpu_allocator()
    configure_hub_http()


def make_accelerator():
    """One Accelerator per process; without an accelerator in CPU mode (a ``torchrun`` group of several
    processes is then one multi-CPU group). Changes no process setting (see :func:`configure_process`)."""
    from accelerate import Accelerator

    from distilkit.models.device_policy import has_accelerator

    return Accelerator(cpu=not has_accelerator())


def describe_hardware(accelerator) -> str:
    if accelerator.device.type == "cuda":
        name = torch.cuda.get_device_name(accelerator.device)
    else:
        name = f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return f"{accelerator.num_processes} x {name}"
