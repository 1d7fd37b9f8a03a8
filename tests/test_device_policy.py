"""One device policy: the CPU gets the CPU's choices, every accelerator (CUDA, MPS, ...) the same other ones."""

from __future__ import annotations

import pytest
import torch

from distilkit.audit._hessian import hessian_vector_products
from distilkit.methods.dm import _chunk_size
from distilkit.methods.gradient_matching import resolve_strategy
from distilkit.models import create_model
from distilkit.models import device_policy as policy_module
from distilkit.models.device_policy import device_policy


def test_cpu_and_accelerators_get_their_policies():
    cpu = device_policy("cpu")
    assert cpu.fast_cpu and cpu.chunk_batches and not cpu.batched_hvp
    assert (cpu.gradient_strategy, cpu.loo_strategy) == ("loop", "sequential")
    for device in ("cuda", "cuda:1", "mps", torch.device("mps"), "xpu"):
        policy = device_policy(device)
        assert policy == device_policy("cuda")
        assert not policy.fast_cpu and not policy.chunk_batches and policy.batched_hvp
        assert (policy.gradient_strategy, policy.loo_strategy) == ("vmap", "vectorised")


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
def test_methods_follow_the_policy(device):
    """DM's batching and gradient matching's strategy come from the policy, so MPS is an accelerator."""
    policy = device_policy(device)
    assert _chunk_size("auto", torch.device(device), 32, 100) == (32 if policy.chunk_batches else 100)
    assert _chunk_size(7, torch.device(device), 32, 100) == 7  # a setting wins over the policy
    assert resolve_strategy("auto", torch.device(device)) == policy.gradient_strategy
    assert resolve_strategy("vmap", torch.device(device)) == "vmap"


def test_hessian_vector_products_take_the_policy_strategy(monkeypatch):
    torch.manual_seed(0)
    model = create_model("convnet-w8-d2", 1, 10, (28, 28))
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    vectors = torch.randn(3, sum(p.numel() for p in model.parameters()))
    looped = hessian_vector_products(model, x, y, vectors)
    torch.testing.assert_close(looped, hessian_vector_products(model, x, y, vectors, batched=False), rtol=0, atol=0)
    monkeypatch.setattr(policy_module, "CPU_POLICY", policy_module.ACCELERATOR_POLICY)
    torch.testing.assert_close(hessian_vector_products(model, x, y, vectors),
                               hessian_vector_products(model, x, y, vectors, batched=True), rtol=0, atol=0)
