"""CAFE: aligning features at every layer, plus a discrimination term (Wang et al., CVPR 2022).

Multi-layer distribution matching. Each iteration embeds a class-balanced real batch and the
synthetic set with the same DSA transformation per class (DM's batching: real side without
autograd, in chunks, class sums all-reduced across processes) and minimises

    sum_l sum_c || mean f_l(real_c) - mean f_l(syn_c) ||^2  +  beta * CE(real_emb @ centers^T / tau, y_real)

where ``f_l`` is the output of conv block ``l`` (flattened) and ``centers`` are the class means of
the synthetic embeddings (last block): the synthetic class means must classify the real features.
As in CAFE's bi-level loop, the network is not only random: it is re-initialised every
``outer_loop`` iterations and in between trained for ``inner_steps`` SGD steps on the current
synthetic set after each image update (``outer_loop=1, inner_steps=0`` gives fresh random networks,
as in DM).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from distilkit.data.dsa import DSA
from distilkit.data.real import RealData
from distilkit.errors import DistilkitError
from distilkit.methods._learnable import MomentumImages
from distilkit.methods._loop import LearningLoop
from distilkit.methods._registry import MethodOutput, RunContext, method_tables, register_method
from distilkit.methods._synthetic import learnable_images
from distilkit.methods.dm import CPU_REAL_CHUNK, _chunk_size
from distilkit.models.convnet import ConvNet
from distilkit.seeding import seeded_model


@register_method("cafe", **method_tables(__file__))
def distill_cafe(real: RealData, ipc: int, cfg: dict, ctx: RunContext) -> MethodOutput:
    _check(cfg)
    num_classes, device, acc = real.num_classes, ctx.device, ctx.accelerator
    syn_labels, images = learnable_images(real, ipc, cfg["init"], ctx)
    optimizer = torch.optim.SGD([images], lr=cfg["lr_images"], momentum=cfg["momentum"])
    dsa = DSA(cfg["dsa_strategy"]) if cfg["dsa"] else None

    def fresh_net(block: int) -> ConvNet:
        net = seeded_model(cfg["model"], real, ctx.step_generator(block, stream=2), device)
        if not isinstance(net, ConvNet):
            raise DistilkitError(f"cafe needs a ConvNet (layer-wise features); got model {cfg['model']!r}")
        return net

    state = _CafeState(images, optimizer, cfg["outer_loop"], fresh_net)
    logged = {"loss": "loss", "layer_loss": "layer loss", "disc_loss": "discrimination loss"}
    loop = LearningLoop("cafe", ctx, cfg, logged, hint="lower lr_images or lr_net")
    rank_slice = loop.rank_slice(cfg["batch_real"])

    def step(it: int, generator: torch.Generator) -> dict[str, float]:
        net = state.network(it)
        indices = real.sample_per_class(cfg["batch_real"], generator)[:, rank_slice]
        params = dsa.sample(num_classes, generator) if dsa is not None else None
        optimizer.zero_grad(set_to_none=True)
        net.requires_grad_(False)
        layer_loss, disc_loss = cafe_step(net, real, indices, images, syn_labels, dsa, params, acc, cfg)
        optimizer.step()
        if cfg["inner_steps"] > 0:
            _train_net(net, images.detach(), syn_labels.to(device), dsa, cfg, ctx.step_generator(it, stream=1))
        return {"loss": layer_loss + cfg["beta"] * disc_loss, "layer_loss": layer_loss, "disc_loss": disc_loss}

    history = loop.run(step, state)
    return MethodOutput(images=images.detach().cpu(), labels=syn_labels, history=history)


class _CafeState(MomentumImages):
    """The images, their momentum and CAFE's current network (``net.*``), which lives for
    ``outer_loop`` iterations: a block of iterations starting at a multiple of it.

    The network is saved as it is when the checkpoint is written (before the step of that
    iteration); a resumed run loads it unless the step starts a new block, which draws a fresh one.
    """

    def __init__(self, images: torch.Tensor, optimizer: torch.optim.Optimizer, outer_loop: int,
                 fresh: Callable[[int], ConvNet]) -> None:
        super().__init__(images, optimizer)
        self.outer_loop, self.fresh = outer_loop, fresh
        self.net: ConvNet | None = None
        self.saved_net: dict[str, torch.Tensor] | None = None

    def network(self, it: int) -> ConvNet:
        """The network of iteration ``it``: ``fresh(block)`` at a block's start (and at a resume,
        with the saved weights inside a block), else the one trained so far."""
        block = it - it % self.outer_loop
        if self.net is None or it == block:
            net = self.fresh(block)
            if self.saved_net and it != block:
                net.load_state_dict(self.saved_net)
            self.net, self.saved_net = net, None
        return self.net

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**super().tensors(), **{f"net.{k}": v for k, v in self.net.state_dict().items()}}

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        super().restore(tensors, state)
        self.saved_net = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}


def cafe_step(net: ConvNet, real: RealData, indices: torch.Tensor, images: torch.Tensor,
              syn_labels: torch.Tensor, dsa: DSA | None, params, acc, cfg: dict) -> tuple[float, float]:
    """One CAFE loss evaluation; accumulates d loss / d images into ``images.grad``.

    ``indices`` [K, b] is this rank's share of the class-balanced real batch; real and synthetic
    images of class c share DSA parameter set c. Returns (layer-wise matching loss, discrimination
    loss) as floats.
    """
    num_classes, local = indices.shape
    ipc = images.shape[0] // num_classes
    device = images.device
    real_labels = torch.arange(num_classes).repeat_interleave(local).to(device)
    with torch.no_grad():
        x_real = real.batch(indices.reshape(-1)).to(device)
        if dsa is not None:
            x_real = dsa(x_real, params, real_labels)
        chunk = _chunk_size(cfg["real_chunk"], device, CPU_REAL_CHUNK, x_real.shape[0])
        sums: list[torch.Tensor] = []
        embedded = []
        for start in range(0, x_real.shape[0], chunk):
            outs = [o.flatten(1) for o in net.block_outputs(x_real[start : start + chunk])]
            owners = real_labels[start : start + outs[0].shape[0]]
            if not sums:
                sums = [torch.zeros(num_classes, o.shape[1], device=device) for o in outs]
            for total, out in zip(sums, outs, strict=True):
                total.index_add_(0, owners, out)
            embedded.append(outs[-1])
        real_emb = torch.cat(embedded)
        if acc.num_processes > 1:
            real_means = [acc.reduce(s, "sum") / cfg["batch_real"] for s in sums]
        else:
            real_means = [s / local for s in sums]
    x_syn = dsa(images, params, syn_labels) if dsa is not None else images
    syn_outs = [o.flatten(1) for o in net.block_outputs(x_syn)]
    layer_loss = sum(((rm - so.reshape(num_classes, ipc, -1).mean(1)) ** 2).sum()
                     for rm, so in zip(real_means, syn_outs, strict=True))
    centers = syn_outs[-1].reshape(num_classes, ipc, -1).mean(1)
    disc_loss = F.cross_entropy(real_emb @ centers.T / cfg["temperature"], real_labels)
    (layer_loss + cfg["beta"] * disc_loss).backward()
    disc_loss = disc_loss.detach()
    if acc.num_processes > 1:  # the discrimination term differs per rank (local real features)
        images.grad = acc.reduce(images.grad, "mean")
        disc_loss = acc.reduce(disc_loss, "mean")
    return float(layer_loss.detach()), float(disc_loss)


def _train_net(net: ConvNet, images: torch.Tensor, labels: torch.Tensor, dsa: DSA | None, cfg: dict,
               generator: torch.Generator) -> None:
    """``inner_steps`` full-batch SGD steps of ``net`` on the synthetic set (CAFE's inner loop)."""
    net.requires_grad_(True)
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr_net"])
    for _ in range(cfg["inner_steps"]):
        x = dsa(images, dsa.sample(images.shape[0], generator, one_op=True)) if dsa is not None else images
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), labels).backward()
        opt.step()
    net.requires_grad_(False)


def _check(cfg: dict) -> None:
    if cfg["outer_loop"] < 1 or cfg["inner_steps"] < 0:
        raise DistilkitError("cafe: outer_loop must be >= 1 and inner_steps >= 0")
    if cfg["temperature"] <= 0:
        raise DistilkitError(f"cafe: temperature must be > 0, got {cfg['temperature']}")
