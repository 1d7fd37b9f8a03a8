"""The ConvNet's fast CPU paths (distilkit.models.fast_cpu) compute the plain layers' function."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from distilkit.models import create_model, fast_cpu, fast_cpu_enabled, set_fast_cpu
from distilkit.models.fast_cpu import FoldedFirstBlock, avg_pool2x2, fold_mode, folded_conv_instance_norm


@contextmanager
def plain_layers() -> Iterator[None]:
    """The switch off: every ConvNet runs its plain layers."""
    set_fast_cpu(False)
    try:
        yield
    finally:
        set_fast_cpu(True)


def test_the_switch_selects_the_plain_layers():
    torch.manual_seed(0)
    net = create_model("convnet-w16", 1, 10, (28, 28))
    x = torch.randn(4, 1, 28, 28)
    assert fast_cpu_enabled() and fast_cpu.applies(x)
    with torch.no_grad():
        fast, fast_blocks = net.embed(x), net.block_outputs(x)
        with plain_layers():
            assert not fast_cpu_enabled() and not fast_cpu.applies(x)
            plain, plain_blocks = net.embed(x), net.block_outputs(x)
            assert torch.equal(plain, net.features(x).flatten(1))
    assert fast_cpu_enabled()
    assert not torch.equal(fast, plain)  # a different computation ...
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-4)  # ... of the same function
    assert len(fast_blocks) == len(plain_blocks) == 3
    for got, expected in zip(fast_blocks, plain_blocks, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(plain_blocks[-1].flatten(1), plain)


@pytest.mark.parametrize("shape", [(3, 4, 32, 32), (2, 5, 7, 9), (4, 2, 16, 15)])
def test_average_pooling_by_sums_equals_avg_pool2d(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    expected, got = F.avg_pool2d(x, 2), avg_pool2x2(x)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    grad_expected = torch.autograd.grad(expected.square().sum(), x)[0]
    grad_got = torch.autograd.grad(got.square().sum(), x)[0]
    torch.testing.assert_close(grad_got, grad_expected, atol=1e-6, rtol=1e-6)


def test_average_pooling_paths_agree_and_run_in_every_transform():
    """Sums without autograd, sums with the matrix backward, inside vmap/grad and under forward-mode AD
    (the Function's generated vmap rule and jvp) all give avg_pool2d's values and derivatives; the
    backward is differentiable again (DC's synthetic side takes gradients of gradients)."""
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    with torch.no_grad():
        torch.testing.assert_close(avg_pool2x2(x), F.avg_pool2d(x, 2))
    assert torch.autograd.gradcheck(avg_pool2x2, (x,))
    assert torch.autograd.gradgradcheck(avg_pool2x2, (x,))
    per_sample = torch.func.vmap(torch.func.grad(lambda y: avg_pool2x2(y.unsqueeze(0)).square().sum()))(x)
    expected = torch.autograd.grad(F.avg_pool2d(x, 2).square().sum(), x)[0]
    torch.testing.assert_close(per_sample, expected)
    tangent = torch.randn_like(x)
    _, jvp = torch.func.jvp(avg_pool2x2, (x.detach(),), (tangent,))
    torch.testing.assert_close(jvp, F.avg_pool2d(tangent, 2))
    with torch.autograd.forward_ad.dual_level():
        dual = avg_pool2x2(torch.autograd.forward_ad.make_dual(x, tangent))
        torch.testing.assert_close(torch.autograd.forward_ad.unpack_dual(dual).tangent, F.avg_pool2d(tangent, 2))
    strided = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    torch.testing.assert_close(avg_pool2x2(strided), F.avg_pool2d(strided, 2))


@pytest.mark.parametrize("name", ["convnet-w16", "convnet-w16-gn-mp", "convnet-w16-ln", "convnet-w16-d2-np"])
def test_cpu_chunks_give_the_whole_batch_result(name, monkeypatch):
    """A large CPU batch runs in cache-sized chunks; outputs, block outputs and gradients must be
    those of the whole batch."""
    torch.manual_seed(0)
    net = create_model(name, 1, 10, (28, 28))
    x = torch.randn(11, 1, 28, 28, requires_grad=True)
    whole = net(x)
    whole_blocks = net.block_outputs(x)
    whole_grads = torch.autograd.grad(whole.square().sum(), [x, *net.parameters()])
    monkeypatch.setattr(fast_cpu, "CHUNK_BYTES", 3 * 4 * 16 * 32 * 32)  # 3 images per chunk, a ragged last one
    assert fast_cpu.chunk_size(net, x) == 3
    chunked = net(x)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-5)
    for got, expected in zip(net.block_outputs(x), whole_blocks, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    grads = torch.autograd.grad(chunked.square().sum(), [x, *net.parameters()])
    scale = max(float(g.abs().max()) for g in whole_grads)  # an instance-normed conv bias has rounding-noise grads
    for got, expected in zip(grads, whole_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-6 * scale, rtol=1e-4)


def test_batchnorm_convnet_is_never_chunked(monkeypatch):
    monkeypatch.setattr(fast_cpu, "CHUNK_BYTES", 1)
    x = torch.randn(8, 1, 28, 28)
    assert fast_cpu.chunk_size(create_model("convnet-w16-bn", 1, 10, (28, 28)), x) is None
    assert fast_cpu.chunk_size(create_model("convnet-w16", 1, 10, (28, 28)), x) == 1


@pytest.mark.parametrize(("channels", "size"), [(1, (28, 28)), (3, (32, 32)), (3, (20, 24))])
def test_folded_first_block_equals_conv_then_instance_norm(channels, size):
    """Where nothing is differentiated the first conv and its instance norm run as one product; its
    values, and its input gradient (which the fold would give if it were used there), must be the
    two layers' (float64 reference), with random affine parameters."""
    torch.manual_seed(0)
    net = create_model("convnet-w16", channels, 10, size)
    conv, norm = net.features[0], net.features[1]
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        conv.bias.uniform_(-1, 1)  # cancels in the norm
    x = torch.rand(5, channels, *size)
    with torch.no_grad():
        expected = norm.double()(conv.double()(x.double()))
        got = folded_conv_instance_norm(x.double(), conv, norm)
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-9)
    # the input gradient is as precise as the two layers' own (speed, not precision, keeps it off there)
    x64 = x.double().requires_grad_(True)
    weights = torch.randn_like(expected)
    grad_expected = torch.autograd.grad((norm(conv(x64)) * weights).sum(), x64)[0]
    grad_folded = torch.autograd.grad((folded_conv_instance_norm(x64, conv, norm) * weights).sum(), x64)[0]
    torch.testing.assert_close(grad_folded, grad_expected, atol=1e-10, rtol=1e-9)
    net.float()
    x32 = x.clone().requires_grad_(True)
    grad_folded32 = torch.autograd.grad((folded_conv_instance_norm(x32, conv, norm) * weights.float()).sum(), x32)[0]
    assert float((grad_folded32.double() - grad_expected).norm() / grad_expected.norm()) < 1e-5
    with torch.no_grad():
        torch.testing.assert_close(folded_conv_instance_norm(x, conv, norm), expected.float(), atol=1e-5, rtol=1e-4)


def test_fold_mode_follows_what_is_differentiated(monkeypatch):
    torch.manual_seed(0)
    net = create_model("convnet-w16", 1, 10, (28, 28))
    x = torch.randn(6, 1, 28, 28)
    assert fold_mode(net, x) == "parameters"  # training on data, DC's real side: closed-form parameter gradients
    assert fold_mode(net, x.clone().requires_grad_(True)) is None  # learned images: the layers
    with torch.no_grad():
        assert fold_mode(net, x) == "values"
        folded, folded_blocks = net.embed(x), net.block_outputs(x)
    net.requires_grad_(False)
    assert fold_mode(net, x) == "values" and fold_mode(net, x.clone().requires_grad_(True)) is None  # DM's sides
    assert fold_mode(create_model("convnet-w16-bn", 1, 10, (28, 28)).requires_grad_(False), x) is None
    assert fold_mode(create_model("convnet-w16-ln", 1, 10, (28, 28)).requires_grad_(False), x) is None
    net.requires_grad_(True)
    with torch.autograd.forward_ad.dual_level():
        assert fold_mode(net, x) is None  # FoldedFirstBlock has no forward-mode rule
    params = {name: p.detach().expand(2, *p.shape).clone().requires_grad_(True) for name, p in net.named_parameters()}

    seen: list[str | None] = []
    monkeypatch.setattr(fast_cpu, "fold_mode", lambda net, x: seen.append(fold_mode(net, x)) or seen[-1])
    batched = torch.func.vmap(lambda p: torch.func.functional_call(net, p, (x,)))(params)
    grads = torch.autograd.grad(batched.sum(), list(params.values()))
    assert seen == [None] and all(g is not None for g in grads)  # vmapped parameters are never folded
    with plain_layers(), torch.no_grad():
        torch.testing.assert_close(folded, net.embed(x), atol=1e-5, rtol=1e-4)
        for got, expected in zip(folded_blocks, net.block_outputs(x), strict=True):
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def _with_random_affines(channels: int, size: tuple[int, int]):
    """A ConvNet with random norm affines and conv biases."""
    torch.manual_seed(0)
    net = create_model("convnet-w8", channels, 10, size)
    with torch.no_grad():
        net.features[1].weight.uniform_(0.5, 1.5)
        net.features[1].bias.uniform_(-0.5, 0.5)
        net.features[0].bias.uniform_(-1, 1)
    return net


@pytest.mark.parametrize(("channels", "size"), [(1, (28, 28)), (3, (32, 32)), (3, (20, 24))])
def test_folded_first_block_parameter_gradients_equal_the_layers(channels, size):
    """FoldedFirstBlock's closed-form backward gives every parameter the layers' gradient: float64
    to 1e-12, float32 within rounding; the conv bias, which the norm cancels, gets 0."""
    net = _with_random_affines(channels, size)
    x, y = torch.rand(12, channels, *size), torch.randint(0, 10, (12,))
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        net.to(dtype)
        assert fold_mode(net, x.to(dtype)) == "parameters"
        got = torch.autograd.grad(F.cross_entropy(net(x.to(dtype)), y), list(net.parameters()))
        with plain_layers():
            expected = torch.autograd.grad(F.cross_entropy(net(x.to(dtype)), y), list(net.parameters()))
        assert float(got[1].abs().max()) == 0.0 and float(expected[1].abs().max()) < 1e-6  # the first conv's bias
        names = [name for name, _ in net.named_parameters()]
        for name, g, e in zip(names, got, expected, strict=True):
            if name.endswith("bias") and isinstance(net.get_submodule(name.rsplit(".", 1)[0]), torch.nn.Conv2d):
                continue  # every conv bias is cancelled by the instance norm after it: rounding noise on both sides
            assert float((g - e).norm() / e.norm()) < tolerance, (dtype, name)


def test_folded_first_block_second_derivatives_are_the_layers():
    """With create_graph (Hessian-vector products, audits) the backward recomputes the layers, so
    the second derivative is exact too; and an input that needs its gradient gets the layers' one."""
    net = _with_random_affines(1, (28, 28)).double()
    x, y = torch.rand(6, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (6,))
    vector = [torch.randn_like(p) for p in net.parameters()]

    def hessian_vector(model):
        params = list(model.parameters())
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        return torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vector, strict=True)), params)

    folded = hessian_vector(net)
    with plain_layers():
        layers = hessian_vector(net)
    for got, expected in zip(folded, layers, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)
    conv, norm = net.features[0], net.features[1]
    x_grad = x.clone().requires_grad_(True)
    out = FoldedFirstBlock.apply(x_grad, conv.weight, conv.bias, norm.weight, norm.bias, conv.padding, norm.eps)
    weights = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad((out * weights).sum(), x_grad)[0],
                               torch.autograd.grad((norm(conv(x_grad)) * weights).sum(), x_grad)[0])
