"""Influence of single training points: exact leave-one-out (vectorised) and TracIn.

Exact leave-one-out (the study's estimator): from ONE shared initialisation, train N + 1 models
full-batch — model i without point i, model N with all points — and record every model's
cross-entropy on every test image. ``influence[i, t] = loss_t(without i) - loss_t(with all)``:
positive when point i helps test image t.

The N + 1 trainings run as one computation: the models' parameters are stacked along a leading
dimension; leaving a point out is a 0/1 weight in each model's mean loss, and one backward pass of
the summed losses gives every model its own gradient. For the ConvNet family the stacked models
run as ONE network in a model-major channel layout [N, M*C, H, W] (:func:`stacked_convnet`): the
first convolution is a plain convolution with the M weight sets stacked as output channels (all
models see the same images), later ones are grouped convolutions (groups = M), instance norm is a
group norm over the M*C channels, and the heads are one batched matrix product. Other networks
use ``torch.func.vmap(functional_call)``, whose batching of convolutions reshapes between layouts
at every layer. Models are processed in chunks of ``model_chunk``
(memory grows with it). :func:`loo_influence_sequential` is the reference: the same trainings one
after another through :func:`distilkit.train.train_model`.

TracIn (Pruthi et al. 2020) is the fast estimator: along the single training run on all points,
``sum_k lr_k / N * grad loss_t(theta_k) . grad loss_i(theta_k)`` over checkpoints ``theta_k`` —
the first-order effect of point i's share of each full-batch step on test image t.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from distilkit.errors import ConfigError, DistilkitError
from distilkit.models.device_policy import device_policy
from distilkit.models.fast_cpu import avg_pool2x2
from distilkit.train import TrainConfig, train_model

LOO_STRATEGIES = ("auto", "vectorised", "sequential")


def _per_sample_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample for logits [..., N, K] and hard [N] or soft [N, K] targets -> [..., N]."""
    if targets.dtype == torch.long:
        picked = logits.gather(-1, targets.expand(*logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return torch.logsumexp(logits, -1) - picked
    return -(targets * F.log_softmax(logits, -1)).sum(-1)


def _check_stateless(model: nn.Module) -> None:
    if any(True for _ in model.buffers()):
        raise DistilkitError("influence needs a model without running statistics (e.g. an instance-norm ConvNet); "
                             "BatchNorm buffers cannot be stacked per leave-one-out model")


def _lr_at(cfg: TrainConfig, step: int, steps: int, lr: float) -> float:
    return lr * 0.1 if cfg.lr_schedule == "step_half" and steps > 1 and step >= steps // 2 else lr


@torch.no_grad()
def _test_losses(forward, params, test_images: torch.Tensor, test_labels: torch.Tensor,
                 test_chunk: int) -> torch.Tensor:
    return torch.cat([_per_sample_ce(forward(params, test_images[s : s + test_chunk]),
                                     test_labels[s : s + test_chunk].to(test_images.device))
                      for s in range(0, test_images.shape[0], test_chunk)], dim=-1)


def stacked_convnet(model: nn.Module, num_models: int):
    """A forward ``f(params, x) -> logits [M, N, K]`` of ``num_models`` stacked copies of a ConvNet.

    ``params`` maps the model's parameter names to tensors with a leading model dimension; ``x``
    [N, C, H, W] is shared by all models. Returns ``None`` when the model is not a ConvNet this
    layout supports (layer norm mixes channels and space per model; batch norm has buffers).
    """
    from distilkit.models.convnet import ConvNet

    if not isinstance(model, ConvNet):
        return None
    layers = list(model.features.named_children())
    for _, layer in layers:
        if not isinstance(layer, (nn.Conv2d, nn.GroupNorm, nn.ReLU, nn.AvgPool2d, nn.MaxPool2d, nn.Identity)):
            return None
    m = num_models

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h, shared = x, True
        for name, layer in layers:
            if isinstance(layer, nn.Conv2d):
                weight, bias = params[f"features.{name}.weight"], params[f"features.{name}.bias"]
                h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]), bias.reshape(-1), padding=layer.padding,
                             groups=1 if shared else m)
                shared = False
            elif isinstance(layer, nn.GroupNorm):
                h = F.group_norm(h, m * layer.num_groups, params[f"features.{name}.weight"].reshape(-1),
                                 params[f"features.{name}.bias"].reshape(-1), layer.eps)
            elif isinstance(layer, nn.ReLU):
                h = F.relu(h)
            elif isinstance(layer, nn.AvgPool2d):
                h = avg_pool2x2(h)
            else:
                h = layer(h)
        if shared:  # no convolution: every model sees the same features
            h = h.unsqueeze(1).expand(h.shape[0], m, *h.shape[1:])
        features = h.reshape(h.shape[0], m, -1).transpose(0, 1)  # [M, N, F], each model's own flatten order
        weight, bias = params["classifier.weight"], params["classifier.bias"]
        return torch.baddbmm(bias.unsqueeze(1), features, weight.transpose(1, 2))

    return forward


def loo_test_losses(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, test_images: torch.Tensor,
                    test_labels: torch.Tensor, cfg: TrainConfig, lr: float | None = None, model_chunk: int = 16,
                    test_chunk: int = 1000, device: torch.device | str = "cpu", progress=None,
                    models: list[int] | None = None, strategy: str = "auto",
                    stacking: str = "auto") -> torch.Tensor:
    """Test losses [len(models), T] of the leave-one-out models (index i < N: without point i; N: all).

    ``model`` holds the shared initialisation (left unchanged). ``models`` selects which of the
    N + 1 models to train (default all), e.g. one process's share. Full-batch training only.
    ``strategy``: "vectorised" (``model_chunk`` models per vmapped pass), "sequential" (one model
    after another through the standard training loop) or "auto" — the device policy's: sequential on
    CPUs, where vmap's batching of convolutions and group norm is slower than the plain loop,
    vectorised on accelerators. ``stacking``: "auto" runs ConvNets as one grouped network
    (:func:`stacked_convnet`), "vmap" forces ``torch.func.vmap``.
    """
    if cfg.batch_size is not None or cfg.dsa:
        raise DistilkitError("exact leave-one-out is defined for full-batch training without augmentation")
    if strategy not in LOO_STRATEGIES:
        raise ConfigError(f"unknown leave-one-out strategy {strategy!r}; choose from {', '.join(LOO_STRATEGIES)}")
    _check_stateless(model)
    n = images.shape[0]
    models = list(range(n + 1)) if models is None else models
    if strategy == "sequential" or (strategy == "auto" and device_policy(device).loo_strategy == "sequential"):
        return _sequential_test_losses(model, images, targets, test_images, test_labels, cfg, lr, test_chunk, device,
                                       progress, models)
    lr = cfg.lr if lr is None else lr
    steps = cfg.steps_for(n)
    base = copy.deepcopy(model).to(device).train()
    init = {k: v.detach() for k, v in base.named_parameters()}
    images, targets, test_images = images.to(device), targets.to(device), test_images.to(device)
    out = []
    for start in range(0, len(models), model_chunk):
        ids = torch.tensor(models[start : start + model_chunk])
        m = ids.numel()
        forward = stacked_convnet(base, m) if stacking == "auto" else None
        if forward is None:
            forward = vmap(lambda p, x: functional_call(base, p, (x,)), in_dims=(0, None))
        weights = torch.ones(m, n, device=device)
        left_out = ids < n
        weights[left_out.nonzero().flatten(), ids[left_out]] = 0.0
        weights /= weights.sum(1, keepdim=True)
        params = {k: v.unsqueeze(0).repeat(m, *([1] * v.dim())).requires_grad_(True) for k, v in init.items()}
        momentum = {k: None for k in params}
        for step in range(steps):
            loss = (_per_sample_ce(forward(params, images), targets) * weights).sum()
            grads = torch.autograd.grad(loss, list(params.values()))
            step_lr = _lr_at(cfg, step, steps, lr)
            with torch.no_grad():
                for (k, p), g in zip(params.items(), grads, strict=True):
                    if cfg.weight_decay:
                        g = g + cfg.weight_decay * p
                    if momentum[k] is None:  # torch.optim.SGD: the first buffer is the gradient itself
                        momentum[k] = g.clone()
                    else:
                        momentum[k].mul_(cfg.momentum).add_(g)
                    p.sub_(step_lr * momentum[k])
            if progress is not None:
                progress.update(m)
        out.append(_test_losses(forward, {k: v.detach() for k, v in params.items()}, test_images, test_labels,
                                test_chunk).cpu())
    return torch.cat(out)


def _sequential_test_losses(model, images, targets, test_images, test_labels, cfg, lr, test_chunk, device, progress,
                            models) -> torch.Tensor:
    n = images.shape[0]
    test_images = test_images.to(device)

    def single(net, x):
        return net(x)

    rows = []
    for i in models:
        keep = torch.arange(n) != i
        trained = train_model(copy.deepcopy(model), images[keep], targets[keep], cfg, torch.Generator().manual_seed(0),
                              lr=lr, device=device).eval()
        rows.append(_test_losses(single, trained, test_images, test_labels, test_chunk).cpu())
        if progress is not None:
            progress.update(cfg.steps_for(n))
    return torch.stack(rows) if rows else torch.empty(0, test_labels.shape[0])


def influence_from_losses(losses: torch.Tensor) -> torch.Tensor:
    """[N + 1, T] leave-one-out test losses (last row: all points) -> influence [N, T]."""
    return losses[:-1] - losses[-1:]


def loo_influence_sequential(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                             test_images: torch.Tensor, test_labels: torch.Tensor, cfg: TrainConfig,
                             lr: float | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Reference: the N + 1 trainings one after another with the standard training loop -> influence [N, T]."""
    return influence_from_losses(loo_test_losses(model, images, targets, test_images, test_labels, cfg, lr,
                                                 device=device, strategy="sequential"))


def tracin(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, test_images: torch.Tensor,
           test_labels: torch.Tensor, cfg: TrainConfig, checkpoints: int = 10, lr: float | None = None,
           test_chunk: int = 256, device: torch.device | str = "cpu") -> torch.Tensor:
    """TracIn influence [N, T] along one full-batch run on all points, at ``checkpoints`` evenly spaced steps.

    Per-example gradients come from ``vmap(grad(...))``; the test side is processed in chunks so the
    [T, D] gradient matrix is never held at once.
    """
    if cfg.batch_size is not None or cfg.dsa:
        raise DistilkitError("TracIn here follows full-batch training without augmentation")
    _check_stateless(model)
    n = images.shape[0]
    lr = cfg.lr if lr is None else lr
    steps = cfg.steps_for(n)
    every = max(1, steps // checkpoints)
    work = copy.deepcopy(model).to(device)
    images, targets = images.to(device), targets.to(device)
    test_images, test_labels = test_images.to(device), test_labels.to(device)

    def sample_loss(p, x, y):
        return _per_sample_ce(functional_call(work, p, (x.unsqueeze(0),)), y.unsqueeze(0)).squeeze(0)

    per_sample_grad = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    influence = torch.zeros(n, test_images.shape[0])
    optimizer = torch.optim.SGD(work.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    for step in range(steps):
        step_lr = _lr_at(cfg, step, steps, lr)
        if step % every == 0:
            work.eval()
            params = {k: v.detach() for k, v in work.named_parameters()}
            train_grads = torch.cat([g.flatten(1) for g in per_sample_grad(params, images, targets).values()], 1)
            for s in range(0, test_images.shape[0], test_chunk):
                test_grads = per_sample_grad(params, test_images[s : s + test_chunk], test_labels[s : s + test_chunk])
                flat = torch.cat([g.flatten(1) for g in test_grads.values()], 1)
                influence[:, s : s + test_chunk] += (step_lr * every / n) * (train_grads @ flat.T).cpu()
        work.train()
        for group in optimizer.param_groups:
            group["lr"] = step_lr
        loss = _per_sample_ce(work(images), targets).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return influence


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two equally shaped tensors (flattened; ties broken by order)."""
    ra = a.flatten().argsort().argsort().double()
    rb = b.flatten().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))
