"""One device policy: every choice distilkit makes by the kind of device it runs on, in one place.

A CPU and an accelerator (a CUDA or ROCm GPU, Apple's MPS, any device ``torch.accelerator`` knows)
want different implementations of the same computation. On a CPU a few cores share small caches:
large batches run in chunks that stay in cache, per-class or per-model loops beat ``vmap`` (whose
batched activations stream through memory), and the ConvNet takes its fast CPU paths
(:mod:`distilkit.models.fast_cpu`). An accelerator wants the opposite: one large batched call.
Every such decision reads :func:`device_policy`, so a device is treated the same way everywhere;
the measurements behind the choices are in the README's benchmarks section.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DevicePolicy:
    """How distilkit computes on one kind of device.

    ``fast_cpu``: the ConvNet runs its fast CPU paths (pooling by sums, the folded first block,
    cache-sized chunks of images; :mod:`distilkit.models.fast_cpu`).
    ``chunk_batches``: methods run large batches in their CPU chunk sizes (DM: 32 real images per
    forward, 64 synthetic images per pass) instead of one call.
    ``gradient_strategy``: how gradient matching takes the per-class gradients (``"loop"`` class
    by class, ``"vmap"`` all classes at once).
    ``loo_strategy``: how exact leave-one-out trains its models (``"sequential"`` one after
    another, ``"vectorised"`` a chunk of models per pass).
    ``batched_hvp``: Hessian-vector products push all probes through one vmapped double backward
    (otherwise the probes share each chunk's graph, one double backward each).
    """

    fast_cpu: bool
    chunk_batches: bool
    gradient_strategy: str
    loo_strategy: str
    batched_hvp: bool


CPU_POLICY = DevicePolicy(fast_cpu=True, chunk_batches=True, gradient_strategy="loop", loo_strategy="sequential",
                          batched_hvp=False)
ACCELERATOR_POLICY = DevicePolicy(fast_cpu=False, chunk_batches=False, gradient_strategy="vmap",
                                  loo_strategy="vectorised", batched_hvp=True)


def device_policy(device: torch.device | str) -> DevicePolicy:
    """The policy for ``device``: the CPU's, or the accelerators' for every other device type."""
    return CPU_POLICY if torch.device(device).type == "cpu" else ACCELERATOR_POLICY


def has_accelerator() -> bool:
    """Whether this process sees an accelerator (CUDA/ROCm, MPS, ...) that Accelerate will place work on."""
    return torch.accelerator.is_available()
