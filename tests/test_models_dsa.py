from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distilkit.data.dsa import DSA
from distilkit.models import ConvNet, UnknownModelError, create_model, parse_convnet_name


@pytest.mark.parametrize("size,depth,channels", [((28, 28), 3, 1), ((32, 32), 3, 3), ((64, 64), 4, 3),
                                                 ((20, 20), 2, 1)])
def test_convnet_shapes(size, depth, channels):
    net = ConvNet(channels, 7, size, width=16, depth=depth)
    x = torch.randn(2, channels, *size)
    assert net(x).shape == (2, 7)
    assert net.embed(x).shape == (2, net.feature_dim)


def test_convnet_names_and_reference_size():
    assert parse_convnet_name("convnet-d4-w64-bn-mp") == {"depth": 4, "width": 64, "norm": "batchnorm",
                                                          "pooling": "maxpooling"}
    net = create_model("convnet", 3, 10, (32, 32))
    assert sum(p.numel() for p in net.parameters()) == 320_010  # ConvNet-3 on CIFAR-10 (REFERENCE.md §2)
    with pytest.raises(UnknownModelError):
        create_model("convnet-q3", 3, 10, (32, 32))
    with pytest.raises(UnknownModelError):
        create_model("timm/not_a_model_xyz", 3, 10, (32, 32))


def test_timm_resnet_adapted_to_small_inputs():
    net = create_model("timm/resnet18", 1, 10, (28, 28))
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_dsa_siamese_groups_share_the_transformation():
    dsa = DSA()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 16, 16)
    for _ in range(10):
        params = dsa.sample(2, gen)
        groups = torch.tensor([0, 0, 0, 1, 1, 1])
        out = dsa(torch.cat([x[:3], x[:3]]), params, torch.tensor([0, 0, 0, 0, 0, 0]))
        assert torch.allclose(out[:3], out[3:])  # same group -> same transform on the same image
        out2 = dsa(x, params, groups)
        assert out2.shape == x.shape


def test_dsa_is_differentiable_and_deterministic():
    dsa = DSA()
    x = torch.rand(8, 1, 12, 12, requires_grad=True)
    params = dsa.sample(8, torch.Generator().manual_seed(3))
    y1 = dsa(x, params)
    y2 = dsa(x, params)
    assert torch.equal(y1, y2)
    y1.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_dsa_groups_are_identity_free_of_unknowns():
    with pytest.raises(ValueError):
        DSA("color_blur")
    flip = DSA("flip")
    x = torch.arange(16.0).view(1, 1, 4, 4)
    params = flip.sample(1, torch.Generator().manual_seed(0))
    params.u[:] = 0.0  # below the flip probability: flipped
    assert torch.equal(flip(x, params), x.flip(3))
    params.u[:] = 0.9
    assert torch.equal(flip(x, params), x)


@pytest.mark.parametrize("shape", [(3, 4, 32, 32), (2, 5, 7, 9), (4, 2, 16, 15)])
def test_gemm_average_pooling_equals_avg_pool2d(shape):
    import torch.nn.functional as F

    from distilkit.models.convnet import AvgPool2x2

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    expected, got = F.avg_pool2d(x, 2), AvgPool2x2()(x)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    grad_expected = torch.autograd.grad(expected.square().sum(), x)[0]
    grad_got = torch.autograd.grad(got.square().sum(), x)[0]
    torch.testing.assert_close(grad_got, grad_expected, atol=1e-6, rtol=1e-6)


def test_average_pooling_paths_agree_and_differentiate_twice():
    """The CPU pooling's three paths (sums without autograd, sums with the matrix backward, the matrix
    product for odd sizes and transforms) give avg_pool2d's values; the backward is differentiable
    again (DC's synthetic side takes gradients of gradients)."""
    import torch.nn.functional as F

    from distilkit.models.convnet import AvgPool2x2

    pool = AvgPool2x2()
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    with torch.no_grad():
        torch.testing.assert_close(pool(x), F.avg_pool2d(x, 2))
    assert torch.autograd.gradcheck(pool, (x,))
    assert torch.autograd.gradgradcheck(pool, (x,))
    per_sample = torch.func.vmap(torch.func.grad(lambda y: pool(y.unsqueeze(0)).square().sum()))(x)
    expected = torch.autograd.grad(F.avg_pool2d(x, 2).square().sum(), x)[0]
    torch.testing.assert_close(per_sample, expected)
    strided = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    torch.testing.assert_close(pool(strided), F.avg_pool2d(strided, 2))


@pytest.mark.parametrize("name", ["convnet-w16", "convnet-w16-gn-mp", "convnet-w16-ln", "convnet-w16-d2-np"])
def test_cpu_chunks_give_the_whole_batch_result(name, monkeypatch):
    """A large CPU batch runs in cache-sized chunks; outputs, block outputs and gradients must be
    those of the whole batch."""
    from distilkit.models import convnet

    torch.manual_seed(0)
    net = create_model(name, 1, 10, (28, 28))
    x = torch.randn(11, 1, 28, 28, requires_grad=True)
    whole = net(x)
    whole_blocks = net.block_outputs(x)
    whole_grads = torch.autograd.grad(whole.square().sum(), [x, *net.parameters()])
    monkeypatch.setattr(convnet, "CPU_CHUNK_BYTES", 3 * 4 * 16 * 32 * 32)  # 3 images per chunk, a ragged last one
    assert net._cpu_chunk(x) == 3
    chunked = net(x)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-5)
    for got, expected in zip(net.block_outputs(x), whole_blocks, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    grads = torch.autograd.grad(chunked.square().sum(), [x, *net.parameters()])
    scale = max(float(g.abs().max()) for g in whole_grads)  # an instance-normed conv bias has rounding-noise grads
    for got, expected in zip(grads, whole_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-6 * scale, rtol=1e-4)


def test_batchnorm_convnet_is_never_chunked(monkeypatch):
    from distilkit.models import convnet

    monkeypatch.setattr(convnet, "CPU_CHUNK_BYTES", 1)
    assert create_model("convnet-w16-bn", 1, 10, (28, 28))._cpu_chunk(torch.randn(8, 1, 28, 28)) is None
    assert create_model("convnet-w16", 1, 10, (28, 28))._cpu_chunk(torch.randn(8, 1, 28, 28)) == 1


@pytest.mark.parametrize(("channels", "size"), [(1, (28, 28)), (3, (32, 32)), (3, (20, 24))])
def test_folded_first_block_equals_conv_then_instance_norm(channels, size):
    """Where nothing is differentiated the first conv and its instance norm run as one product; its
    values, and its input gradient (which the fold would give if it were used there), must be the
    two layers' (float64 reference), with random affine parameters."""
    from distilkit.models.convnet import folded_conv_instance_norm

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


def test_fold_mode_follows_what_is_differentiated():
    torch.manual_seed(0)
    net = create_model("convnet-w16", 1, 10, (28, 28))
    x = torch.randn(6, 1, 28, 28)
    assert net._fold_mode(x) == "parameters"  # training on data, DC's real side: closed-form parameter gradients
    assert net._fold_mode(x.clone().requires_grad_(True)) is None  # learned images: the layers
    with torch.no_grad():
        assert net._fold_mode(x) == "values"
        folded, folded_blocks = net.embed(x), net.block_outputs(x)
    net.requires_grad_(False)
    assert net._fold_mode(x) == "values" and net._fold_mode(x.clone().requires_grad_(True)) is None  # DM's sides
    assert create_model("convnet-w16-bn", 1, 10, (28, 28)).requires_grad_(False)._fold_mode(x) is None
    assert create_model("convnet-w16-ln", 1, 10, (28, 28)).requires_grad_(False)._fold_mode(x) is None
    net.requires_grad_(True)
    with torch.autograd.forward_ad.dual_level():
        assert net._fold_mode(x) is None  # FoldedFirstBlock has no forward-mode rule
    params = {name: p.detach().expand(2, *p.shape).clone().requires_grad_(True) for name, p in net.named_parameters()}

    seen: list[str | None] = []
    decide = net._fold_mode
    net._fold_mode = lambda x: seen.append(decide(x)) or seen[-1]  # what the forward decides inside vmap
    batched = torch.func.vmap(lambda p: torch.func.functional_call(net, p, (x,)))(params)
    grads = torch.autograd.grad(batched.sum(), list(params.values()))
    assert seen == [None] and all(g is not None for g in grads)  # vmapped parameters are never folded
    net._fold_mode = lambda x: None  # the layers themselves
    torch.testing.assert_close(folded, net.embed(x), atol=1e-5, rtol=1e-4)
    for got, expected in zip(folded_blocks, net.block_outputs(x), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def _layers_and_folded(channels: int, size: tuple[int, int]):
    """A ConvNet with random norm affines and conv biases, and a copy that never folds."""
    import copy

    torch.manual_seed(0)
    net = create_model("convnet-w8", channels, 10, size)
    with torch.no_grad():
        net.features[1].weight.uniform_(0.5, 1.5)
        net.features[1].bias.uniform_(-0.5, 0.5)
        net.features[0].bias.uniform_(-1, 1)
    layers = copy.deepcopy(net)
    layers._fold_mode = lambda x: None
    return net, layers


@pytest.mark.parametrize(("channels", "size"), [(1, (28, 28)), (3, (32, 32)), (3, (20, 24))])
def test_folded_first_block_parameter_gradients_equal_the_layers(channels, size):
    """FoldedFirstBlock's closed-form backward gives every parameter the layers' gradient: float64
    to 1e-12, float32 within rounding; the conv bias, which the norm cancels, gets 0."""
    net, layers = _layers_and_folded(channels, size)
    x, y = torch.rand(12, channels, *size), torch.randint(0, 10, (12,))
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        net.to(dtype), layers.to(dtype)
        assert net._fold_mode(x.to(dtype)) == "parameters"
        got = torch.autograd.grad(F.cross_entropy(net(x.to(dtype)), y), list(net.parameters()))
        expected = torch.autograd.grad(F.cross_entropy(layers(x.to(dtype)), y), list(layers.parameters()))
        assert float(got[1].abs().max()) == 0.0 and float(expected[1].abs().max()) < 1e-6  # the first conv's bias
        names = [name for name, _ in net.named_parameters()]
        for name, g, e in zip(names, got, expected, strict=True):
            if name.endswith("bias") and isinstance(net.get_submodule(name.rsplit(".", 1)[0]), torch.nn.Conv2d):
                continue  # every conv bias is cancelled by the instance norm after it: rounding noise on both sides
            assert float((g - e).norm() / e.norm()) < tolerance, (dtype, name)


def test_folded_first_block_second_derivatives_are_the_layers():
    """With create_graph (Hessian-vector products, audits) the backward recomputes the layers, so
    the second derivative is exact too; and an input that needs its gradient gets the layers' one."""
    net, layers = _layers_and_folded(1, (28, 28))
    net.double(), layers.double()
    x, y = torch.rand(6, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (6,))
    vector = [torch.randn_like(p) for p in net.parameters()]

    def hessian_vector(model):
        params = list(model.parameters())
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        return torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vector, strict=True)), params)

    for got, expected in zip(hessian_vector(net), hessian_vector(layers), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)
    from distilkit.models.convnet import FoldedFirstBlock

    conv, norm = net.features[0], net.features[1]
    x_grad = x.clone().requires_grad_(True)
    out = FoldedFirstBlock.apply(x_grad, conv.weight, conv.bias, norm.weight, norm.bias, conv.padding, norm.eps)
    weights = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad((out * weights).sum(), x_grad)[0],
                               torch.autograd.grad((norm(conv(x_grad)) * weights).sum(), x_grad)[0])
