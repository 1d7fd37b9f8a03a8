"""Random real subset, class-balanced: the baseline every distillation method must beat."""

from __future__ import annotations

from distilkit.data.real import RealData
from distilkit.methods._registry import MethodOutput, RunContext, register_method


@register_method(
    "random",
    family="selection",
    summary="class-balanced random real images (baseline)",
    defaults={},
    citation="",
)
def select_random(real: RealData, ipc: int, cfg: dict, ctx: RunContext) -> MethodOutput:
    indices = real.sample_per_class(ipc, ctx.step_generator(0)).reshape(-1)
    return MethodOutput(images=real.batch(indices).clone(), labels=real.train_labels[indices],
                        history={"selected_indices": indices.tolist()})
