"""Test and benchmark instruments: :class:`SavedTensorMeter`, the bytes autograd holds for backward."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class SavedTensorMeter:
    """Counts the bytes autograd saves for backward that are alive at once (current and peak).

    Every tensor a graph saves passes through ``saved_tensors_hooks``; the pack hook wraps it in a
    small object that adds its size when created and subtracts it when the graph drops it. The peak
    is deterministic (no allocator or OS noise), and it is exactly the memory a longer unroll would
    add. Storage shared between saved tensors is counted once per save (an upper bound).
    """

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0

    @contextmanager
    def track(self) -> Iterator[SavedTensorMeter]:
        meter = self

        class _Held:
            __slots__ = ("tensor", "size")

            def __init__(self, tensor: torch.Tensor) -> None:
                self.tensor, self.size = tensor, tensor.numel() * tensor.element_size()
                meter.live += self.size
                meter.peak = max(meter.peak, meter.live)

            def __del__(self) -> None:
                meter.live -= self.size

        with torch.autograd.graph.saved_tensors_hooks(_Held, lambda held: held.tensor):
            yield self
