"""Trajectory matching (MTT; Cazenavette et al., CVPR 2022) with TESLA's constant memory.

Experts are ConvNets trained on real data whose parameters were saved after every epoch
(:mod:`distilkit.experts`; found in the cache, given as a folder or ``hf://`` repo, or trained now
with the run's expert settings). Every iteration picks an expert and a start epoch ``t`` below
``max_start_epoch``, starts a student at the expert's ``theta(t)`` and trains it ``syn_steps`` SGD
steps on minibatches (``batch_syn``; 0 = the whole set) of the DSA-augmented synthetic set with a
*learnable* learning rate. The loss is the normalised parameter distance

    ||theta_student - theta(t + M)||^2 / ||theta(t) - theta(t + M)||^2,   M = expert_epochs,

backpropagated to the images (SGD, momentum 0.5), the learning rate (SGD, momentum 0.5) and, with
``soft_labels`` (TESLA), to label logits initialised from an expert's logits.

Memory (``memory``):

- ``unrolled``: plain backpropagation through the unrolled steps; the graph of all ``syn_steps``
  steps is alive at once, so memory grows linearly with ``syn_steps``.
- ``constant`` (default; TESLA, Cui et al. 2023): the unroll runs without a graph and keeps only the
  student's parameters ``theta_i`` after every step. The backward pass walks the steps in reverse
  with the adjoint ``a = dL/dtheta_{i+1}``: it recomputes step i's gradient ``g_i`` with a graph and
  takes the vector-Jacobian product of ``theta_i - lr g_i`` with ``a``, which gives this step's
  contributions to dL/d images, dL/d lr (and labels) and the new adjoint ``a - lr H_i a``. The
  result is the same gradient as plain unrolling (tests check allclose); only one step's graph is
  alive at a time, at the price of one more gradient evaluation per step.

Every rank runs the same computation on the same draws (``ctx.step_generator``), so the images stay
identical on every process and 2 processes give the 1-process answer; experts are trained split
across processes. The learned lr goes to ``DistilledSet.learned_lr`` and the card (the original
code never saved it); learned labels (``softmax(logits)``) to ``soft_labels``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch.func import functional_call

from distilkit.data.dsa import DSA, DSAParams
from distilkit.data.real import RealData
from distilkit.errors import DistilkitError
from distilkit.experts import ExpertConfig, Experts, check_matches, ensure_experts, open_experts
from distilkit.methods._learnable import LearnedTensors
from distilkit.methods._loop import LearningLoop
from distilkit.methods._registry import MethodOutput, RunContext, method_tables, register_method
from distilkit.methods._synthetic import learnable_images
from distilkit.seeding import seeded_model
from distilkit.train import soft_cross_entropy

EXPERT_MEMORY = 8  # expert trajectories kept in memory at once


@register_method("mtt", **method_tables(__file__))
def distill_mtt(real: RealData, ipc: int, cfg: dict, ctx: RunContext) -> MethodOutput:
    _check(cfg)
    device = ctx.device
    experts = _experts(real, cfg, ctx)
    if cfg["max_start_epoch"] - 1 + cfg["expert_epochs"] > experts.epochs:
        raise DistilkitError(f"mtt: max_start_epoch {cfg['max_start_epoch']} + expert_epochs {cfg['expert_epochs']} "
                             f"needs experts of at least {cfg['max_start_epoch'] - 1 + cfg['expert_epochs']} epochs; "
                             f"these have {experts.epochs}")
    net = seeded_model(cfg["model"], real, None, device)  # the architecture; its weights come from the experts
    names = experts.param_names
    trajectories = _TrajectoryCache(experts, device)
    syn_labels, images = learnable_images(real, ipc, cfg["init"], ctx)
    syn_lr = torch.tensor(float(cfg["lr_teacher"]), device=device).requires_grad_(True)
    learned = {"images": images, "lr": syn_lr}
    optimizers = {"images": torch.optim.SGD([images], lr=cfg["lr_images"], momentum=cfg["momentum_images"]),
                  "lr": torch.optim.SGD([syn_lr], lr=cfg["lr_lr"], momentum=cfg["momentum_lr"])}
    logits = None
    if cfg["soft_labels"]:
        with torch.no_grad():
            teacher = trajectories.get(0)[min(cfg["max_start_epoch"], experts.epochs)]
            logits = functional_call(net, dict(zip(names, teacher, strict=True)), (images,)).detach()
        logits.requires_grad_(True)
        learned["logits"] = logits
        optimizers["logits"] = torch.optim.SGD([logits], lr=cfg["lr_labels"], momentum=cfg["momentum_images"])
    dsa = DSA(cfg["dsa_strategy"]) if cfg["dsa"] else None
    batch = cfg["batch_syn"] if 0 < cfg["batch_syn"] < images.shape[0] else images.shape[0]
    loop = LearningLoop("mtt", ctx, cfg, {"loss": "matching loss", "lr": "learned lr", "start_epoch": "start epoch"},
                        hint="lower lr_images or lr_lr")

    def step(it: int, generator: torch.Generator) -> dict[str, float]:
        expert = int(torch.randint(experts.num_experts, (1,), generator=generator))
        epoch = int(torch.randint(cfg["max_start_epoch"], (1,), generator=generator))
        trajectory = trajectories.get(expert)
        plan = draw_plan(images.shape[0], batch, cfg["syn_steps"], dsa, generator)
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss = trajectory_matching_step(net, names, trajectory[epoch], trajectory[epoch + cfg["expert_epochs"]],
                                        images, syn_labels.to(device), logits, syn_lr, plan, dsa, cfg["memory"])
        for opt in optimizers.values():
            opt.step()
        lr_now = float(syn_lr.detach())
        if lr_now <= 0:  # a NaN or infinite lr (or loss) the loop reports
            raise DistilkitError(f"mtt: the learned lr became {lr_now:.3g} at iteration {it} (must stay finite and "
                                 "> 0); lower lr_lr; the last checkpoint is kept")
        return {"loss": loss, "lr": lr_now, "start_epoch": epoch}

    state = LearnedTensors(learned, {f"opt.{name}": (opt, {name: learned[name]}) for name, opt in optimizers.items()})
    history = loop.run(step, state)
    soft = torch.softmax(logits.detach(), 1).cpu() if logits is not None else None
    return MethodOutput(images=images.detach().cpu(), labels=syn_labels, soft_labels=soft,
                        learned_lr=float(syn_lr.detach()), history=history)


def _experts(real: RealData, cfg: dict, ctx: RunContext) -> Experts:
    if cfg["experts"] == "auto":
        expert_cfg = ExpertConfig(model=cfg["model"], num_experts=cfg["num_experts"], epochs=cfg["expert_train_epochs"],
                                  batch_size=cfg["expert_batch"], seed=ctx.seed)
        experts = ensure_experts(real, expert_cfg, ctx.accelerator, show_progress=ctx.show_progress)
    else:  # a folder; a Hub reference was fetched to one before the run (distilkit.hub.experts.fetch_hub_inputs)
        experts = open_experts(str(cfg["experts"]))
    check_matches(experts, real, cfg["model"])
    return experts


class _TrajectoryCache:
    """Expert trajectories on the run's device, the ``EXPERT_MEMORY`` most recently used kept."""

    def __init__(self, experts: Experts, device: torch.device) -> None:
        self.experts, self.device = experts, device
        self.loaded: OrderedDict[int, list[list[torch.Tensor]]] = OrderedDict()

    def get(self, i: int) -> list[list[torch.Tensor]]:
        if i not in self.loaded:
            self.loaded[i] = [[t.to(self.device) for t in epoch] for epoch in self.experts.trajectory(i)]
            while len(self.loaded) > EXPERT_MEMORY:
                self.loaded.popitem(last=False)
        self.loaded.move_to_end(i)
        return self.loaded[i]


def draw_plan(n: int, batch: int, steps: int, dsa: DSA | None,
              generator: torch.Generator) -> list[tuple[torch.Tensor, DSAParams | None]]:
    """The student's minibatches (as in MTT: chunks of a fresh permutation, refilled when used up)
    and one DSA draw per step; drawn once so that the constant-memory recomputation sees the same."""
    plan, chunks = [], []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.randperm(n, generator=generator).split(batch))
        idx = chunks.pop(0)
        params = dsa.sample(len(idx), generator, one_op=True) if dsa is not None else None
        plan.append((idx, params))
    return plan


def _student_loss(net: torch.nn.Module, names: list[str], params: list[torch.Tensor], images: torch.Tensor,
                  labels: torch.Tensor, logits: torch.Tensor | None, idx: torch.Tensor, dsa: DSA | None,
                  dsa_params: DSAParams | None) -> torch.Tensor:
    idx = idx.to(images.device)
    x = images[idx]
    if dsa is not None:
        x = dsa(x, dsa_params)
    targets = torch.softmax(logits[idx], 1) if logits is not None else labels[idx]
    return soft_cross_entropy(functional_call(net, dict(zip(names, params, strict=True)), (x,)), targets)


def parameter_distance(params: list[torch.Tensor], start: list[torch.Tensor],
                       target: list[torch.Tensor]) -> torch.Tensor:
    """``||params - target||^2 / ||start - target||^2`` over all parameters."""
    num = sum(((p - t) ** 2).sum() for p, t in zip(params, target, strict=True))
    den = sum(((s - t) ** 2).sum() for s, t in zip(start, target, strict=True))
    return num / den


def trajectory_matching_step(net: torch.nn.Module, names: list[str], start: list[torch.Tensor],
                             target: list[torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
                             logits: torch.Tensor | None, syn_lr: torch.Tensor,
                             plan: list[tuple[torch.Tensor, DSAParams | None]], dsa: DSA | None,
                             memory: str = "constant") -> float:
    """Unroll the student from ``start`` along ``plan``, return the normalised distance to ``target``
    and accumulate its gradient into ``.grad`` of ``images``, ``syn_lr`` and ``logits`` (if given)."""
    learned = [t for t in (images, syn_lr, logits) if t is not None]
    if memory == "unrolled":
        params = [p.detach().clone().requires_grad_(True) for p in start]
        for idx, dsa_params in plan:
            loss = _student_loss(net, names, params, images, labels, logits, idx, dsa, dsa_params)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            params = [p - syn_lr * g for p, g in zip(params, grads, strict=True)]
        distance = parameter_distance(params, start, target)
        _accumulate(learned, torch.autograd.grad(distance, learned, allow_unused=True))
        return float(distance.detach())
    if memory != "constant":
        raise DistilkitError(f"mtt: memory must be 'constant' or 'unrolled', got {memory!r}")
    lr_value = syn_lr.detach()
    fixed_images = images.detach()
    fixed_logits = logits.detach() if logits is not None else None
    thetas = [[p.detach() for p in start]]
    for idx, dsa_params in plan:
        params = [p.requires_grad_(True) for p in (t.clone() for t in thetas[-1])]
        loss = _student_loss(net, names, params, fixed_images, labels, fixed_logits, idx, dsa, dsa_params)
        grads = torch.autograd.grad(loss, params)
        thetas.append([(p - lr_value * g).detach() for p, g in zip(params, grads, strict=True)])
    final = [p.requires_grad_(True) for p in (t.clone() for t in thetas[-1])]
    distance = parameter_distance(final, start, target)
    adjoint = list(torch.autograd.grad(distance, final))
    for (idx, dsa_params), theta in zip(reversed(plan), reversed(thetas[:-1]), strict=True):
        params = [t.clone().requires_grad_(True) for t in theta]
        loss = _student_loss(net, names, params, images, labels, logits, idx, dsa, dsa_params)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        out = [p - syn_lr * g for p, g in zip(params, grads, strict=True)]
        vjp = torch.autograd.grad(out, params + learned, adjoint, allow_unused=True)
        adjoint = [a.detach() for a in vjp[: len(params)]]
        _accumulate(learned, vjp[len(params):])
        del out, grads, loss, vjp
    return float(distance.detach())


def _accumulate(tensors: list[torch.Tensor], grads: tuple) -> None:
    for tensor, grad in zip(tensors, grads, strict=True):
        if grad is not None:
            tensor.grad = grad.detach() if tensor.grad is None else tensor.grad + grad.detach()


def _check(cfg: dict) -> None:
    for key in ("syn_steps", "expert_epochs", "max_start_epoch"):
        if int(cfg[key]) < 1:
            raise DistilkitError(f"mtt: {key} must be >= 1, got {cfg[key]}")
    if cfg["batch_syn"] < 0:
        raise DistilkitError(f"mtt: batch_syn must be >= 0 (0 = the whole set), got {cfg['batch_syn']}")
    if not cfg["lr_teacher"] > 0:
        raise DistilkitError(f"mtt: lr_teacher must be > 0, got {cfg['lr_teacher']}")
    if cfg["memory"] not in ("constant", "unrolled"):
        raise DistilkitError(f"mtt: memory must be 'constant' or 'unrolled', got {cfg['memory']!r}")

