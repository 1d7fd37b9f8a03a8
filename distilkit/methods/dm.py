"""Distribution matching (DM; Zhao & Bilen, WACV 2023).

Every iteration draws a fresh randomly initialised ConvNet (never trained), embeds a class-balanced
real batch and the synthetic images with the same DSA transformation per class, and moves the
synthetic images so that their class means of the embedding match the real ones:
``loss = sum_c || mean embed(real_c) - mean embed(syn_c) ||^2``. All classes share the same forward
calls (one pass on GPU, small chunks on CPU; see :func:`matching_step`, measured by
benchmarks/bench_dm.py); the real side runs without autograd and its class sums are all-reduced across
processes, so every rank computes the same loss on the same synthetic images.
"""

from __future__ import annotations

import torch

from distilkit.data.dsa import DSA
from distilkit.data.real import RealData
from distilkit.methods._learnable import MomentumImages
from distilkit.methods._loop import LearningLoop
from distilkit.methods._registry import MethodOutput, RunContext, method_tables, register_method
from distilkit.methods._synthetic import learnable_images
from distilkit.models.device_policy import device_policy
from distilkit.seeding import seeded_model

CPU_REAL_CHUNK, CPU_SYN_CHUNK = 32, 64


@register_method("dm", **method_tables(__file__))
def distill_dm(real: RealData, ipc: int, cfg: dict, ctx: RunContext) -> MethodOutput:
    num_classes, device = real.num_classes, ctx.device
    acc = ctx.accelerator
    syn_labels, images = learnable_images(real, ipc, cfg["init"], ctx)
    optimizer = torch.optim.SGD([images], lr=cfg["lr_images"], momentum=cfg["momentum"])
    dsa = DSA(cfg["dsa_strategy"]) if cfg["dsa"] else None
    loop = LearningLoop("dm", ctx, cfg, {"loss": "matching loss"}, hint="lower lr_images")
    # Each rank embeds its share of every class's real batch; class sums are all-reduced.
    rank_slice = loop.rank_slice(cfg["batch_real"])

    def step(it: int, generator: torch.Generator) -> dict[str, float]:
        net = seeded_model(cfg["model"], real, generator, device).requires_grad_(False)
        indices = real.sample_per_class(cfg["batch_real"], generator)[:, rank_slice]
        params = dsa.sample(num_classes, generator) if dsa is not None else None
        optimizer.zero_grad(set_to_none=True)
        loss = matching_step(net, real, indices, images, syn_labels, dsa, params, acc, cfg["batch_real"],
                             cfg["real_chunk"], cfg["syn_chunk"])
        optimizer.step()
        return {"loss": loss}

    history = loop.run(step, MomentumImages(images, optimizer))
    return MethodOutput(images=images.detach().cpu(), labels=syn_labels, history=history)


def has_batch_statistics(net: torch.nn.Module) -> bool:
    """Whether a module normalises by batch statistics (then splitting a batch changes its output)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def _chunk_size(setting: int | str, device: torch.device, cpu_default: int, total: int) -> int:
    if setting == "auto":
        setting = cpu_default if device_policy(device).chunk_batches else 0
    return int(setting) if int(setting) > 0 else total


def matching_step(net: torch.nn.Module, real: RealData, indices: torch.Tensor, images: torch.Tensor,
                  syn_labels: torch.Tensor, dsa: DSA | None, params, acc, batch_real: int,
                  real_chunk: int | str = "auto", syn_chunk: int | str = "auto") -> float:
    """One DM loss evaluation for one network; accumulates d loss / d images into ``images.grad``.

    ``indices`` [K, b] is this rank's share of the real batch. Real and synthetic images of class
    c share DSA parameter set c. The real side runs without autograd; its per-class embedding sums
    are all-reduced across processes. Both sides run in chunks ("auto": 32 real images / 64
    synthetic images per pass on CPU, where small buffers are reused by the allocator; one pass on
    GPUs). Synthetic chunks hold whole classes and backpropagate separately, which is exact because
    the loss is a sum over classes. A network with batch statistics (BatchNorm) is never chunked:
    its embedding of an image depends on the whole batch, so each side runs as one batch of all
    classes, as DM's reference code does for its BatchNorm ConvNet.
    """
    num_classes, local = indices.shape
    ipc = images.shape[0] // num_classes
    device = images.device
    if has_batch_statistics(net):
        real_chunk, syn_chunk = 0, 0
    with torch.no_grad():
        x_real = real.batch(indices.reshape(-1)).to(device)
        if dsa is not None:
            x_real = dsa(x_real, params, torch.arange(num_classes).repeat_interleave(local))
        chunk = _chunk_size(real_chunk, device, CPU_REAL_CHUNK, x_real.shape[0])
        embedded = torch.cat([net.embed(part) for part in x_real.split(chunk)])
        real_sum = embedded.reshape(num_classes, local, -1).sum(1)
        real_mean = acc.reduce(real_sum, "sum") / batch_real if acc.num_processes > 1 else real_sum / local
    classes_per_pass = max(1, _chunk_size(syn_chunk, device, CPU_SYN_CHUNK, images.shape[0]) // ipc)
    total = 0.0
    for first in range(0, num_classes, classes_per_pass):
        classes = slice(first, min(num_classes, first + classes_per_pass))
        rows = slice(classes.start * ipc, classes.stop * ipc)
        x_syn = dsa(images[rows], params, syn_labels[rows]) if dsa is not None else images[rows]
        syn_mean = net.embed(x_syn).reshape(-1, ipc, real_mean.shape[1]).mean(1)
        loss = ((real_mean[classes] - syn_mean) ** 2).sum()
        loss.backward()
        total += loss.item()
    return total
