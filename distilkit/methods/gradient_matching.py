"""Gradient matching: DC (Zhao, Mopuri & Bilen, ICLR 2021) and DSA (Zhao & Bilen, ICML 2021).

Every iteration draws a fresh randomly initialised network. ``outer_loop`` times it (1) draws a
class-balanced real batch, (2) computes, for every class c, the gradient of the cross-entropy with
respect to the network's parameters on the real images of c (no graph) and on the synthetic images
of c (with graph), (3) moves the synthetic images one SGD step down

    D = sum_c sum_layers sum_rows (1 - cos(g_real[c, row], g_syn[c, row]))

where a layer's rows are its output channels (conv) or output units (linear), and 1-D parameters
(biases, norm affine) contribute nothing, as in DC's ``distance_wb``; and then, except after the
last outer step, (4) trains the network ``inner_loop`` epochs on the synthetic set (SGD, batches of
``batch_train``). ``dsa`` is the same loop with differentiable siamese augmentation: one DSA
parameter set per class per matching step, applied to the real and the synthetic images of that
class alike, and DSA with one group per batch while training the network on the synthetic set.

The per-class gradients are computed either class by class (``gradient_strategy="loop"``, DC's own
loop, the yardstick) or for all classes at once with ``torch.func`` (``"vmap"``: ``vmap`` over
classes of ``grad`` of a ``functional_call``, the image gradient taken through it); ``"auto"``
picks what benchmarks/bench_gradient_matching.py measured faster on the device. The real side is
sharded across processes (each rank a slice of every class's batch, per-class gradient sums
all-reduced), so every rank computes the same distance on the same synthetic images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from distilkit.data.dsa import DEFAULT_STRATEGY, DSA, DSAParams
from distilkit.data.real import RealData
from distilkit.errors import DistilkitError
from distilkit.methods._learnable import MomentumImages
from distilkit.methods._loop import LearningLoop
from distilkit.methods._registry import MethodOutput, RunContext, method_tables, register_method
from distilkit.methods._synthetic import learnable_images
from distilkit.models.device_policy import device_policy
from distilkit.seeding import seeded_model

STRATEGIES = ("auto", "vmap", "loop")
COSINE_EPS = 1e-6  # DC's distance_wb adds 1e-6 to the product of the norms

TABLES = method_tables(__file__)  # gradient_matching.yaml: the family and options dc and dsa share


def _register(name: str, summary: str, citation: str, dsa: bool):
    defaults = {**TABLES["defaults"], "dsa_strategy": DEFAULT_STRATEGY} if dsa else dict(TABLES["defaults"])
    return register_method(name, summary=summary, **{**TABLES, "defaults": defaults, "citation": citation})


@_register("dc", "match per-class network gradients on real and synthetic data (Zhao et al. 2021)",
           "Zhao, B., Mopuri, K. R. and Bilen, H. Dataset Condensation with Gradient Matching. ICLR 2021.", False)
def distill_dc(real: RealData, ipc: int, cfg: dict, ctx: RunContext) -> MethodOutput:
    return distill_gradient_matching(real, ipc, cfg, ctx, dsa=None, name="dc")


@_register("dsa", "gradient matching with differentiable siamese augmentation (Zhao & Bilen 2021)",
           "Zhao, B. and Bilen, H. Dataset Condensation with Differentiable Siamese Augmentation. ICML 2021.", True)
def distill_dsa(real: RealData, ipc: int, cfg: dict, ctx: RunContext) -> MethodOutput:
    try:
        dsa = DSA(cfg["dsa_strategy"])
    except ValueError as err:
        raise DistilkitError(f"dsa: {err}") from None
    return distill_gradient_matching(real, ipc, cfg, ctx, dsa=dsa, name="dsa")


def distill_gradient_matching(real: RealData, ipc: int, cfg: dict, ctx: RunContext, dsa: DSA | None,
                              name: str) -> MethodOutput:
    """The DC/DSA loop shared by both registrations (see the module docstring)."""
    _check(cfg, real, name)
    num_classes, device, acc = real.num_classes, ctx.device, ctx.accelerator
    syn_labels, images = learnable_images(real, ipc, cfg["init"], ctx)
    optimizer = torch.optim.SGD([images], lr=cfg["lr_images"], momentum=cfg["momentum"])
    strategy = resolve_strategy(cfg["gradient_strategy"], device)
    loop = LearningLoop(name, ctx, cfg, {"loss": "matching loss"}, hint="lower lr_images or lr_net")
    rank_slice = loop.rank_slice(cfg["batch_real"])
    labels_dev = syn_labels.to(device)

    def step(it: int, generator: torch.Generator) -> dict[str, float]:
        net = seeded_model(cfg["model"], real, ctx.step_generator(it, stream=2), device)
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            raise DistilkitError(f"{name}: BatchNorm networks are not supported (model {cfg['model']!r}); "
                                 "use instance, layer or group norm")
        net_opt = torch.optim.SGD(net.parameters(), lr=cfg["lr_net"], momentum=cfg["momentum_net"])
        total = 0.0
        for outer in range(cfg["outer_loop"]):
            indices = real.sample_per_class(cfg["batch_real"], generator)[:, rank_slice]
            params = dsa.sample(num_classes, generator) if dsa is not None else None
            optimizer.zero_grad(set_to_none=True)
            total += matching_step(net, real, indices, images, dsa, params, acc, cfg["batch_real"], strategy,
                                   cfg["class_chunk"])
            optimizer.step()
            if outer < cfg["outer_loop"] - 1:
                train_on_synthetic(net, net_opt, images.detach(), labels_dev, cfg["inner_loop"], cfg["batch_train"],
                                   dsa, generator)
        return {"loss": total / (num_classes * cfg["outer_loop"])}

    history = loop.run(step, MomentumImages(images, optimizer))
    return MethodOutput(images=images.detach().cpu(), labels=syn_labels, history=history)


def resolve_strategy(setting: str, device: torch.device) -> str:
    """``auto`` -> the device policy's strategy: ``loop`` on CPUs, ``vmap`` on accelerators."""
    if setting == "auto":
        return device_policy(device).gradient_strategy
    return setting


def gradient_distance(g_real: torch.Tensor, g_syn: torch.Tensor) -> torch.Tensor:
    """DC's layer distance for one parameter, summed over a leading class dimension.

    ``g_real`` and ``g_syn`` are [K, *param_shape]. A parameter's rows are its first dimension
    (output channels of a conv, output units of a linear layer); the distance is the sum over
    classes and rows of ``1 - cos``. 1-D parameters (biases, norm affine) contribute 0, as in DC.
    """
    if g_real.ndim <= 2:  # [K, n]: a 1-D parameter
        return g_syn.new_zeros(())
    rows_real = g_real.reshape(g_real.shape[0], g_real.shape[1], -1)
    rows_syn = g_syn.reshape(g_syn.shape[0], g_syn.shape[1], -1)
    dot = (rows_real * rows_syn).sum(-1)
    cosine = dot / (rows_real.norm(dim=-1) * rows_syn.norm(dim=-1) + COSINE_EPS)
    return (1 - cosine).sum()


def matching_step(net: nn.Module, real: RealData, indices: torch.Tensor, images: torch.Tensor, dsa: DSA | None,
                  params: DSAParams | None, acc, batch_real: int, strategy: str = "loop",
                  class_chunk: int = 0) -> float:
    """One gradient-matching loss over all classes; accumulates d loss / d images into ``images.grad``.

    ``indices`` [K, b] is this rank's share of the class-balanced real batch; class c's real and
    synthetic images share DSA parameter set c. The real per-class gradients are of
    ``sum CE / batch_real`` over the local share, all-reduced (summed) across processes, so that
    any number of processes gives the mean over the whole batch. Returns the summed distance.
    """
    num_classes, local = indices.shape
    ipc = images.shape[0] // num_classes
    device = images.device
    real_groups = torch.arange(num_classes).repeat_interleave(local)
    syn_groups = torch.arange(num_classes).repeat_interleave(ipc)
    with torch.no_grad():
        x_real = real.batch(indices.reshape(-1)).to(device)
        if dsa is not None:
            x_real = dsa(x_real, params, real_groups)
    x_syn = dsa(images, params, syn_groups) if dsa is not None else images
    y_real, y_syn = real_groups.to(device), syn_groups.to(device)
    if strategy == "vmap":
        loss = _vmap_distance(net, x_real, y_real, x_syn, y_syn, num_classes, acc, batch_real, class_chunk)
        torch.autograd.backward(loss, inputs=[images])
        return float(loss.detach())
    if strategy != "loop":
        raise DistilkitError(f"unknown gradient_strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    weights = [p for p in net.parameters()]
    real_grads = []
    for c in range(num_classes):
        rows = slice(c * local, (c + 1) * local)
        loss_real = F.cross_entropy(net(x_real[rows]), y_real[rows], reduction="sum") / batch_real
        real_grads.append([g.detach() for g in torch.autograd.grad(loss_real, weights)])
    if acc.num_processes > 1:
        flat = acc.reduce(torch.stack([torch.cat([g.reshape(-1) for g in grads]) for grads in real_grads]), "sum")
        real_grads = [list(_unflatten(row, weights)) for row in flat]
    loss = images.new_zeros(())
    for c in range(num_classes):
        rows = slice(c * ipc, (c + 1) * ipc)
        loss_syn = F.cross_entropy(net(x_syn[rows]), y_syn[rows])
        syn_grads = torch.autograd.grad(loss_syn, weights, create_graph=True)
        loss = loss + sum(gradient_distance(gr.unsqueeze(0), gs.unsqueeze(0))
                          for gr, gs in zip(real_grads[c], syn_grads, strict=True))
    torch.autograd.backward(loss, inputs=[images])
    return float(loss.detach())


def _unflatten(flat: torch.Tensor, like: list[torch.Tensor]):
    offset = 0
    for p in like:
        yield flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()


def _vmap_distance(net: nn.Module, x_real: torch.Tensor, y_real: torch.Tensor, x_syn: torch.Tensor,
                   y_syn: torch.Tensor, num_classes: int, acc, batch_real: int, class_chunk: int) -> torch.Tensor:
    """All classes' parameter gradients at once (``vmap`` over classes of ``grad``) and their distance."""
    weights = {k: v.detach() for k, v in net.named_parameters()}
    buffers = dict(net.named_buffers())

    def class_loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
        return F.cross_entropy(functional_call(net, (p, buffers), (x,)), y, reduction="sum") * scale

    chunk = class_chunk if class_chunk > 0 else None
    per_class = vmap(grad(class_loss), in_dims=(None, 0, 0, None), chunk_size=chunk)
    with torch.no_grad():
        real_grads = per_class(weights, x_real.reshape(num_classes, -1, *x_real.shape[1:]),
                               y_real.reshape(num_classes, -1), 1.0 / batch_real)
        if acc.num_processes > 1:
            names = list(real_grads)
            flat = acc.reduce(torch.cat([real_grads[k].reshape(num_classes, -1) for k in names], 1), "sum")
            sizes = [real_grads[k][0].numel() for k in names]
            real_grads = {k: part.reshape(real_grads[k].shape) for k, part in zip(names, flat.split(sizes, 1),
                                                                                strict=True)}
    ipc = x_syn.shape[0] // num_classes
    syn_grads = per_class(weights, x_syn.reshape(num_classes, ipc, *x_syn.shape[1:]), y_syn.reshape(num_classes, ipc),
                          1.0 / ipc)
    return sum(gradient_distance(real_grads[k], syn_grads[k]) for k in weights)


def train_on_synthetic(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
                       epochs: int, batch_train: int, dsa: DSA | None, generator: torch.Generator) -> None:
    """DC's inner loop: ``epochs`` shuffled passes of SGD over the synthetic set in batches of
    ``batch_train`` (DSA with one group per batch when ``dsa`` is given)."""
    n = images.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(images.device)
        for batch in order.split(batch_train):
            x = images[batch]
            if dsa is not None:
                x = dsa(x, dsa.sample(x.shape[0], generator, one_op=True))
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), labels[batch]).backward()
            optimizer.step()


def _check(cfg: dict, real: RealData, name: str) -> None:
    if cfg["gradient_strategy"] not in STRATEGIES:
        raise DistilkitError(f"{name}: unknown gradient_strategy {cfg['gradient_strategy']!r}; "
                             f"choose from {', '.join(STRATEGIES)}")
    for key in ("outer_loop", "batch_real", "batch_train"):
        if int(cfg[key]) < 1:
            raise DistilkitError(f"{name}: {key} must be >= 1, got {cfg[key]}")
    if cfg["inner_loop"] < 0 or cfg["class_chunk"] < 0 or cfg["iterations"] < 0:
        raise DistilkitError(f"{name}: iterations, inner_loop and class_chunk must be >= 0")
    real.require_per_class(int(cfg["batch_real"]), f"{name}: batch_real")
