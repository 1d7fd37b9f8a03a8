"""Meta-learning by backpropagation through time (BPTT; Wang et al. 2018, Deng & Russakovsky 2022).

Every outer iteration draws a freshly initialised network, trains it for ``inner_steps`` full-batch
SGD steps (momentum ``inner_momentum``) on the synthetic set with a learnable learning rate and
learnable soft labels, takes the cross-entropy of the result on a class-balanced real batch, and
backpropagates it through the unrolled training to the images, the log learning rate and the label
logits (Adam). The inner training runs functionally (``torch.func.functional_call`` on explicit
parameter tensors), so each step's parameters are ordinary autograd tensors.

Memory stays bounded for long unrolls in two ways (see :func:`unrolled_backward`):

- ``truncate`` (Deng & Russakovsky's truncated BPTT): only the last ``truncate`` inner steps are
  differentiated; the first ones run without a graph (0 = differentiate all steps).
- ``checkpoint_segment``: gradient checkpointing over the differentiated window. The forward pass
  keeps only the parameters at every segment start; the backward pass recomputes one segment at a
  time with a graph and backpropagates through it, carrying d loss / d parameters to the previous
  segment. Memory ~ one segment's graph + one parameter copy per segment, at the price of one more
  forward pass over the window (0 = one segment, no recomputation).

The learned learning rate goes to ``DistilledSet.learned_lr`` (and the card); the learned labels
(``softmax(logits)``) to ``soft_labels``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.func import functional_call

from distilkit.data.real import RealData
from distilkit.errors import DistilkitError
from distilkit.methods._learnable import LearnedTensors
from distilkit.methods._loop import LearningLoop
from distilkit.methods._registry import MethodOutput, RunContext, method_tables, register_method
from distilkit.methods._synthetic import learnable_images_and_logits
from distilkit.seeding import seeded_model
from distilkit.train import soft_cross_entropy

State = tuple[list[torch.Tensor], list[torch.Tensor]]  # (parameters, momentum buffers)


@register_method("bptt", **method_tables(__file__))
def distill_bptt(real: RealData, ipc: int, cfg: dict, ctx: RunContext) -> MethodOutput:
    _check(cfg)
    device, acc = ctx.device, ctx.accelerator
    syn_labels, images, logits = learnable_images_and_logits(real, ipc, cfg, ctx)
    log_lr = torch.tensor(math.log(cfg["lr_inner"]), device=device)
    learned = {"images": images, "logits": logits, "log_lr": log_lr.requires_grad_(cfg["learn_lr"])}
    groups = [{"params": [images], "lr": cfg["lr_images"]}]
    if cfg["learn_labels"]:
        groups.append({"params": [logits], "lr": cfg["lr_labels"]})
    if cfg["learn_lr"]:
        groups.append({"params": [log_lr], "lr": cfg["lr_lr"]})
    optimizer = torch.optim.Adam(groups)
    loop = LearningLoop("bptt", ctx, cfg, {"loss": "real loss", "lr": "learned lr"},
                        hint="lower lr_inner, lr_lr or lr_images")
    rank_slice = loop.rank_slice(cfg["batch_real"])

    def step(it: int, generator: torch.Generator) -> dict[str, float]:
        net = seeded_model(cfg["model"], real, generator, device)
        indices = real.sample_per_class(cfg["batch_real"], generator)[:, rank_slice].reshape(-1)
        x_real, y_real = real.batch(indices).to(device), real.train_labels[indices].to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = unrolled_backward(net, images, torch.softmax(logits, 1), log_lr, x_real, y_real, cfg["inner_steps"],
                                 cfg["truncate"], cfg["checkpoint_segment"], cfg["inner_momentum"])
        if acc.num_processes > 1:  # each rank evaluates its own share of the real batch
            loss = float(acc.reduce(torch.tensor(loss, device=device), "mean"))
            for tensor in learned.values():
                if tensor.grad is not None:
                    tensor.grad = acc.reduce(tensor.grad, "mean")
        optimizer.step()
        return {"loss": loss, "lr": float(log_lr.detach().exp())}

    history = loop.run(step, LearnedTensors(learned, {"opt": (optimizer, learned)}))
    soft = torch.softmax(logits.detach(), 1).cpu() if cfg["learn_labels"] else None
    learned_lr = float(log_lr.detach().exp()) if cfg["learn_lr"] else None
    return MethodOutput(images=images.detach().cpu(), labels=syn_labels, soft_labels=soft, learned_lr=learned_lr,
                        history=history)


def inner_steps(net: torch.nn.Module, names: list[str], state: State, images: torch.Tensor, targets: torch.Tensor,
                lr: torch.Tensor, momentum: float, steps: int, graph: bool) -> State:
    """``steps`` full-batch SGD steps (``v <- momentum v + g; theta <- theta - lr v``) from ``state``.

    With ``graph`` the steps are differentiable (``create_graph``) with respect to the starting
    state, ``images``, ``targets`` and ``lr``; without, every step's result is detached.
    """
    params, buffers = state
    for _ in range(steps):
        if not graph:
            params = [p.detach().requires_grad_(True) for p in params]
        loss = soft_cross_entropy(functional_call(net, dict(zip(names, params, strict=True)), (images,)), targets)
        grads = torch.autograd.grad(loss, params, create_graph=graph)
        if momentum > 0:
            buffers = [momentum * b + g for b, g in zip(buffers, grads, strict=True)]
        else:
            buffers = list(grads)
        params = [p - lr * b for p, b in zip(params, buffers, strict=True)]
        if not graph:
            params, buffers = [p.detach() for p in params], [b.detach() for b in buffers]
    return params, buffers


def unrolled_backward(net: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, log_lr: torch.Tensor,
                      x_real: torch.Tensor, y_real: torch.Tensor, steps: int, truncate: int = 0, segment: int = 0,
                      momentum: float = 0.0) -> float:
    """Unroll ``steps`` inner steps of ``net`` on (images, targets), return the real-batch loss and
    accumulate its gradient into ``.grad`` of ``images``, ``log_lr`` and the leaf behind ``targets``.

    Only the last ``truncate`` steps are differentiated (0: all). Within them, ``segment`` > 0
    checkpoints: parameters are stored at every segment start and each segment is recomputed with a
    graph during the backward pass, last segment first.
    """
    names = [n for n, _ in net.named_parameters()]
    params = [p.detach() for _, p in net.named_parameters()]
    state: State = (params, [torch.zeros_like(p) for p in params])
    lr = log_lr.exp()
    window = steps if truncate <= 0 else min(truncate, steps)
    state = inner_steps(net, names, state, images.detach(), targets.detach(), lr.detach(), momentum,
                        steps - window, graph=False)
    size = window if segment <= 0 else segment
    bounds = [(s, min(s + size, window)) for s in range(0, window, size)]
    starts = [state]
    for first, last in bounds[:-1]:
        starts.append(inner_steps(net, names, starts[-1], images.detach(), targets.detach(), lr.detach(),
                                  momentum, last - first, graph=False))
    learned = [t for t in (images, lr, targets) if t.requires_grad]
    carry: list[torch.Tensor] | None = None
    loss_value = float("nan")
    for (first, last), start in zip(reversed(bounds), reversed(starts), strict=True):
        leaves = [t.detach().requires_grad_(True) for t in start[0] + start[1]]
        n = len(start[0])
        end = inner_steps(net, names, (leaves[:n], leaves[n:]), images, targets, lr, momentum, last - first,
                          graph=True)
        outputs = end[0] + end[1]
        inputs = leaves + learned
        if carry is None:
            logits = functional_call(net, dict(zip(names, end[0], strict=True)), (x_real,))
            loss = F.cross_entropy(logits, y_real)
            loss_value = float(loss.detach())
            grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        else:
            pairs = [(o, c) for o, c in zip(outputs, carry, strict=True) if o.requires_grad and c is not None]
            grads = torch.autograd.grad([o for o, _ in pairs], inputs, [c for _, c in pairs], allow_unused=True)
        carry = list(grads[: len(leaves)])
        _accumulate(inputs[len(leaves):], grads[len(leaves):])
    return loss_value


def _accumulate(tensors: list[torch.Tensor], grads: tuple) -> None:
    """Add ``grads`` into the ``.grad`` of ``tensors``; a non-leaf (``exp(log_lr)``, ``softmax(logits)``)
    passes its gradient on to the leaf behind it (its small graph is kept for the next segment)."""
    for tensor, grad in zip(tensors, grads, strict=True):
        if grad is None:
            continue
        if tensor.is_leaf:
            tensor.grad = grad.detach() if tensor.grad is None else tensor.grad + grad.detach()
        else:
            tensor.backward(grad.detach(), retain_graph=True)


def _check(cfg: dict) -> None:
    if cfg["inner_steps"] < 1:
        raise DistilkitError(f"bptt: inner_steps must be >= 1, got {cfg['inner_steps']}")
    if cfg["truncate"] < 0 or cfg["checkpoint_segment"] < 0:
        raise DistilkitError("bptt: truncate and checkpoint_segment must be >= 0 (0 = off)")
    if cfg["lr_inner"] <= 0:
        raise DistilkitError(f"bptt: lr_inner must be > 0, got {cfg['lr_inner']}")
    if not 0.0 <= cfg["inner_momentum"] < 1.0:
        raise DistilkitError(f"bptt: inner_momentum must be in [0, 1), got {cfg['inner_momentum']}")
