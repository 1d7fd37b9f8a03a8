"""Kernel ridge regression distillation: FRePo (Zhou et al. 2022) and KIP (Nguyen et al. 2021).

The synthetic set (images X_s, learned labels Y_s) is the support set of a kernel ridge regressor;
a real batch (X_t, centered one-hot Y_t) is the query set. Each iteration solves

    alpha = (K_ss + lambda I)^-1 Y_s        (Cholesky factorisation, never an explicit inverse)
    loss  = mean_t || K_ts alpha - Y_t ||^2, lambda = ridge * trace(K_ss) / n

and moves the images and labels by Adam. The kernel is ``phi(x) . phi(x')`` for a feature map
``phi``, chosen by ``kernel``:

- ``frepo`` (default): the penultimate features of one network from a pool of ``pool_size``
  networks that are trained online on the synthetic set (one SGD step each time they are used) and
  re-initialised after ``max_online_steps`` steps, with staggered ages (FRePo's model pool).
- ``random-features``: a fixed, finite random-feature kernel of the ConvNet: the penultimate
  features of ``kernel_nets`` randomly initialised, never trained networks, concatenated and scaled
  by 1/sqrt(kernel_nets) (a Monte Carlo estimate of the architecture's NNGP kernel with a handful
  of finite-width samples). The networks are drawn once per run (``kernel_refresh=0``) or redrawn
  every ``kernel_refresh`` iterations. This is KIP's *idea* (a fixed kernel), not KIP's kernel:
  KIP uses the exact infinite-width NTK/NNGP of a norm-free ConvNet (neural-tangents), which this
  is not; the kernel was called ``kip`` before and that name is refused with a pointer here.

FRePo details distilkit does its own way (``distilkit methods krr --verbose`` marks them): labels
are learned as logits and regressed as ``softmax(logits) - 1/K`` (FRePo learns the label vectors
themselves), the pool networks take plain SGD steps, and ``evaluate`` trains on the learned labels
with soft cross-entropy (FRePo evaluates with MSE on its labels, Adam and a cosine schedule).

Labels are learned as logits; the regression target of a synthetic image is its centered soft label
``softmax(logits) - 1/K``, and ``softmax(logits)`` is stored as the set's ``soft_label``, on which
``evaluate`` trains with soft cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distilkit.data.dsa import DSA, DSAParams
from distilkit.data.real import RealData
from distilkit.errors import DistilkitError
from distilkit.methods._learnable import LearnedTensors, load_optimizer_tensors, optimizer_tensors
from distilkit.methods._loop import LearningLoop
from distilkit.methods._registry import MethodOutput, RunContext, method_tables, register_method
from distilkit.methods._synthetic import learnable_images_and_logits
from distilkit.seeding import seeded_model
from distilkit.train import soft_cross_entropy

KERNELS = ("frepo", "random-features")
RENAMED_KERNELS = {"kip": "random-features"}


@register_method("krr", **method_tables(__file__))
def distill_krr(real: RealData, ipc: int, cfg: dict, ctx: RunContext) -> MethodOutput:
    _check(cfg)
    num_classes, device, acc = real.num_classes, ctx.device, ctx.accelerator
    syn_labels, images, logits = learnable_images_and_logits(real, ipc, cfg, ctx)
    groups = [{"params": [images], "lr": cfg["lr_images"]}]
    if cfg["learn_labels"]:
        groups.append({"params": [logits], "lr": cfg["lr_labels"]})
    optimizer = torch.optim.Adam(groups)
    learned = {"images": images, "logits": logits}
    pool = _Pool(real, cfg, ctx) if cfg["kernel"] == "frepo" else None
    dsa = DSA(cfg["dsa_strategy"]) if cfg["dsa"] else None
    loop = LearningLoop(f"krr-{cfg['kernel']}", ctx, cfg, {"loss": "regression loss"},
                        hint="lower lr_images or lr_labels, or raise ridge")
    rank_slice = loop.rank_slice(cfg["batch_real"])

    def step(it: int, generator: torch.Generator) -> dict[str, float]:
        indices = real.sample_per_class(cfg["batch_real"], generator)[:, rank_slice].reshape(-1)
        x_real = real.batch(indices).to(device)
        y_real = F.one_hot(real.train_labels[indices], num_classes).float().to(device) - 1.0 / num_classes
        x_syn = images
        if dsa is not None:  # draw for the whole batch on every rank, then take this rank's rows
            mine = torch.arange(num_classes * cfg["batch_real"]).reshape(num_classes, -1)[:, rank_slice].reshape(-1)
            drawn = dsa.sample(num_classes * cfg["batch_real"], generator)
            x_real = dsa(x_real, DSAParams(op=drawn.op[mine], u=drawn.u[mine]))
            x_syn = dsa(images, dsa.sample(images.shape[0], generator))
        nets = [pool.pick(it)] if pool is not None else _kernel_nets(real, cfg, ctx, it)
        optimizer.zero_grad(set_to_none=True)
        loss = krr_loss(nets, x_syn, torch.softmax(logits, 1) - 1.0 / num_classes, x_real, y_real, cfg["ridge"])
        loss.backward()
        if acc.num_processes > 1:  # each rank regresses its own share of the real batch
            for tensor in learned.values():
                if tensor.grad is not None:
                    tensor.grad = acc.reduce(tensor.grad, "mean")
            loss = acc.reduce(loss.detach(), "mean")
        optimizer.step()
        if pool is not None:
            pool.train_step(it, images.detach(), torch.softmax(logits.detach(), 1))
        return {"loss": float(loss.detach())}

    history = loop.run(step, _KrrState(learned, optimizer, pool))
    soft = torch.softmax(logits.detach(), 1).cpu() if cfg["learn_labels"] else None
    return MethodOutput(images=images.detach().cpu(), labels=syn_labels, soft_labels=soft, history=history)


def krr_loss(nets: list[torch.nn.Module], x_syn: torch.Tensor, y_syn: torch.Tensor, x_real: torch.Tensor,
             y_real: torch.Tensor, ridge: float) -> torch.Tensor:
    """Mean squared error of the kernel ridge regressor fitted on (x_syn, y_syn), on (x_real, y_real).

    The kernel is the inner product of the concatenated penultimate features of ``nets`` (scaled by
    1/sqrt(len(nets))); the real side runs without autograd.
    """
    scale = len(nets) ** -0.5
    phi_syn = torch.cat([net.embed(x_syn) for net in nets], 1) * scale
    with torch.no_grad():
        phi_real = torch.cat([net.embed(x_real) for net in nets], 1) * scale
    k_ss = phi_syn @ phi_syn.T
    k_ts = phi_real @ phi_syn.T
    n = k_ss.shape[0]
    lam = ridge * k_ss.diagonal().mean().detach()
    factor, info = torch.linalg.cholesky_ex(k_ss + lam * torch.eye(n, device=k_ss.device))
    if int(info) != 0:
        raise DistilkitError(f"krr: the support-set kernel matrix ({n}x{n}) is not positive definite at ridge "
                             f"{ridge:g}; use a larger ridge, e.g. --arg ridge={max(ridge * 100, 1e-4):g}")
    alpha = torch.cholesky_solve(y_syn, factor)
    return ((k_ts @ alpha - y_real) ** 2).sum(1).mean()


def _kernel_nets(real: RealData, cfg: dict, ctx: RunContext, it: int) -> list[torch.nn.Module]:
    """The fixed random-feature kernel: ``kernel_nets`` untrained networks, drawn per refresh period."""
    period = -1 if cfg["kernel_refresh"] <= 0 else it - it % cfg["kernel_refresh"]
    return [seeded_model(cfg["model"], real, ctx.step_generator(period, stream=10 + m), ctx.device)
            .requires_grad_(False) for m in range(cfg["kernel_nets"])]


class _Pool:
    """FRePo's model pool: networks trained online on the synthetic set, with staggered ages."""

    def __init__(self, real: RealData, cfg: dict, ctx: RunContext) -> None:
        self.real, self.cfg, self.ctx = real, cfg, ctx
        size, horizon = cfg["pool_size"], cfg["max_online_steps"]
        self.ages = [m * horizon // size for m in range(size)]
        self.nets = [self._fresh(-3, m) for m in range(size)]
        self.optimizers = [self._optimizer(net) for net in self.nets]

    def _fresh(self, it: int, slot: int) -> torch.nn.Module:
        return seeded_model(self.cfg["model"], self.real, self.ctx.step_generator(it, stream=100 + slot),
                            self.ctx.device).requires_grad_(False)

    def _optimizer(self, net: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=self.cfg["lr_net"], momentum=self.cfg["momentum_net"])

    def pick(self, it: int) -> torch.nn.Module:
        return self.nets[it % len(self.nets)]

    def train_step(self, it: int, images: torch.Tensor, targets: torch.Tensor) -> None:
        """One SGD step of the network used at ``it``; re-initialise it when it reaches its horizon."""
        slot = it % len(self.nets)
        net, opt = self.nets[slot], self.optimizers[slot]
        net.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        soft_cross_entropy(net(images), targets).backward()
        opt.step()
        net.requires_grad_(False)
        self.ages[slot] += 1
        if self.ages[slot] >= self.cfg["max_online_steps"]:
            self.nets[slot] = self._fresh(it, slot)
            self.optimizers[slot] = self._optimizer(self.nets[slot])
            self.ages[slot] = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for m, (net, opt) in enumerate(zip(self.nets, self.optimizers, strict=True)):
            params = dict(net.named_parameters())
            out.update({f"pool{m}.{k}": v for k, v in net.state_dict().items()})
            out.update(optimizer_tensors(opt, params, prefix=f"poolopt{m}"))
        return out

    def load(self, tensors: dict[str, torch.Tensor], ages: list[int]) -> None:
        self.ages = list(ages)
        for m, net in enumerate(self.nets):
            head = f"pool{m}."
            net.load_state_dict({k[len(head):]: v for k, v in tensors.items() if k.startswith(head)})
            self.optimizers[m] = self._optimizer(net)
            load_optimizer_tensors(self.optimizers[m], dict(net.named_parameters()), tensors, prefix=f"poolopt{m}")


def _check(cfg: dict) -> None:
    if cfg["kernel"] in RENAMED_KERNELS:
        raise DistilkitError(f"krr: kernel {cfg['kernel']!r} is now called {RENAMED_KERNELS[cfg['kernel']]!r}: it is a "
                             "finite random-feature kernel of the ConvNet, not KIP's infinite-width NTK/NNGP; pass "
                             f"--arg kernel={RENAMED_KERNELS[cfg['kernel']]}")
    if cfg["kernel"] not in KERNELS:
        raise DistilkitError(f"krr: unknown kernel {cfg['kernel']!r}; choose from {', '.join(KERNELS)}")
    if cfg["ridge"] <= 0:
        raise DistilkitError(f"krr: ridge must be > 0 (the support kernel needs it to be invertible), got "
                             f"{cfg['ridge']}")
    if cfg["pool_size"] < 1 or cfg["max_online_steps"] < 1 or cfg["kernel_nets"] < 1:
        raise DistilkitError("krr: pool_size, max_online_steps and kernel_nets must be >= 1")


class _KrrState(LearnedTensors):
    """Images, label logits and their Adam state, plus FRePo's model pool (networks, their optimizer
    state, and their ages as the JSON entry ``pool_ages``)."""

    def __init__(self, learned: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, pool: _Pool | None) -> None:
        super().__init__(learned, {"opt": (optimizer, learned)})
        self.pool = pool

    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = super().tensors()
        if self.pool is not None:
            tensors.update(self.pool.tensors())
        return tensors

    def entries(self) -> dict:
        return {"pool_ages": self.pool.ages if self.pool is not None else []}

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        super().restore(tensors, state)
        if self.pool is not None:
            self.pool.load(tensors, state["pool_ages"])
