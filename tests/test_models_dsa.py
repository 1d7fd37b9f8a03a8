from __future__ import annotations

import pytest
import torch

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
