"""Saliency, gradient x input, layer gradient, guided backprop and deconvnet against references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convlens
from convlens.attribution.gradient import gradient_x_input, layer_gradient, saliency
from convlens.attribution.guided import activation_derivative, deconvnet, guided_backprop
from convlens.targets import Neuron

from helpers.tiny import TinyConvNet


def _model(module: nn.Module) -> convlens.Model:
    module.eval()
    return convlens.wrap(
        module,
        input_size=module_input(module),
        mean=0.5,
        std=0.25,
        resize=None,
        labels=[f"c{i}" for i in range(5)],
    )


def module_input(module: nn.Module) -> int:
    return getattr(module, "input_size", 16)


def _x(
    n: int = 2, size: int = 16, seed: int = 0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _finite_difference(f, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Central differences of a scalar-per-image function, one coordinate at a time."""
    grad = torch.zeros_like(x)
    flat = x.reshape(x.shape[0], -1)
    for j in range(flat.shape[1]):
        plus, minus = flat.clone(), flat.clone()
        plus[:, j] += eps
        minus[:, j] -= eps
        grad.view(x.shape[0], -1)[:, j] = (f(plus.view_as(x)) - f(minus.view_as(x))) / (2 * eps)
    return grad


def test_saliency_and_layer_gradient_match_finite_differences() -> None:
    net = TinyConvNet(seed=1).double().eval()
    model = _model(net)
    x = _x(2, 8, seed=1)  # small input so finite differences are cheap; the net is size-agnostic
    with torch.no_grad():
        fd = _finite_difference(lambda z: net(z)[:, 3], x)
    torch.testing.assert_close(saliency(model, x, 3), fd, atol=1e-6, rtol=1e-5)

    # a neuron of an inner layer w.r.t. the input
    def unit(z: torch.Tensor) -> torch.Tensor:
        return torch.clamp(net.bn2(net.conv2(torch.relu(net.conv1(z)))), 0, 6)[:, 5, 2, 1]

    with torch.no_grad():
        fd_unit = _finite_difference(unit, x)
    torch.testing.assert_close(
        layer_gradient(model, x, Neuron("relu2", 5, 2, 1)), fd_unit, atol=1e-6, rtol=1e-5
    )
    torch.testing.assert_close(gradient_x_input(model, x, 3), fd * x, atol=1e-6, rtol=1e-5)


def test_saliency_is_the_logit_gradient_not_softmax() -> None:
    model = _model(TinyConvNet(seed=2).double())
    x = _x(1, seed=2)
    grad = saliency(model, x, 1)
    xr = x.clone().requires_grad_()
    (soft,) = torch.autograd.grad(model.module(xr).softmax(1)[:, 1].sum(), xr)
    assert not torch.allclose(grad, soft, atol=1e-8)


@pytest.mark.captum
def test_saliency_and_input_x_gradient_match_captum() -> None:
    captum_attr = pytest.importorskip("captum.attr")
    net = TinyConvNet(seed=3).eval()
    model = _model(net)
    x = _x(3, dtype=torch.float32, seed=3)
    ref = captum_attr.Saliency(net).attribute(
        x.clone().requires_grad_(), target=[0, 1, 4], abs=False
    )
    torch.testing.assert_close(saliency(model, x, [0, 1, 4]), ref, atol=1e-6, rtol=1e-5)
    ref = captum_attr.InputXGradient(net).attribute(x.clone().requires_grad_(), target=2)
    torch.testing.assert_close(gradient_x_input(model, x, 2), ref, atol=1e-6, rtol=1e-5)


class ReluMLPConv(nn.Module):
    """conv -> act -> conv -> act -> linear with a chosen activation type, for matrix-form references."""

    input_size = 6

    def __init__(self, act: type[nn.Module], seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = act()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act2 = act()
        self.fc = nn.Linear(4 * 6 * 6, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 2.0)  # large weights: ReLU6 saturates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act2(self.conv2(self.act1(self.conv1(x)))).flatten(1))


def _matrix(layer: nn.Module, in_shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of a linear (conv/linear, bias-free) map, column by column."""
    n = int(torch.tensor(in_shape).prod())
    eye = torch.eye(n, dtype=torch.float64).view(n, *in_shape)
    with torch.no_grad():
        out = (
            nn.functional.conv2d(eye, layer.weight, None, padding=layer.padding)
            if isinstance(layer, nn.Conv2d)
            else eye @ layer.weight.T
        )
    return out.reshape(n, -1).T  # (out, in)


def _guided_matrix_form(net: ReluMLPConv, x: torch.Tensor, cls: int, mode: str) -> torch.Tensor:
    """Guided backprop / deconvnet written with explicit Jacobian matrices (no autograd)."""
    a1 = net.conv1(x[None])[0]
    h1 = net.act1(a1)
    a2 = net.conv2(h1[None])[0]
    w1, w2, w3 = (
        _matrix(net.conv1, (3, 6, 6)),
        _matrix(net.conv2, (4, 6, 6)),
        net.fc.weight.double(),
    )
    g = w3[cls]  # dS/dh2
    for a, w, act in ((a2, w2, net.act2), (a1, w1, net.act1)):
        mask = activation_derivative(act, a.reshape(-1))
        g = g.clamp(min=0) * (mask if mode == "guided" else 1.0)
        g = w.T @ g
    return g.view(3, 6, 6)


@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6, lambda: nn.LeakyReLU(0.1)])
@pytest.mark.parametrize("mode", ["guided", "deconv"])
def test_guided_and_deconvnet_match_matrix_form(act, mode: str) -> None:  # type: ignore[no-untyped-def]
    net = ReluMLPConv(act, seed=4).double().eval()
    model = convlens.wrap(net, input_size=6, mean=0.5, std=0.25, resize=None)
    x = _x(2, 6, seed=4)
    got = (guided_backprop if mode == "guided" else deconvnet)(model, x, 2)
    for i in range(2):
        torch.testing.assert_close(
            got[i], _guided_matrix_form(net, x[i], 2, mode), atol=1e-9, rtol=1e-7
        )
    if act is nn.ReLU6 and mode == "guided":
        pre = net.conv1(x)
        assert (pre > 6).any(), "the test must exercise ReLU6's upper mask"


@pytest.mark.captum
@pytest.mark.parametrize("mode", ["guided", "deconv"])
def test_match_captum_on_plain_relu_models(mode: str) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    net = ReluMLPConv(nn.ReLU, seed=5).eval()
    model = convlens.wrap(net, input_size=6, mean=0.5, std=0.25, resize=None)
    x = _x(2, 6, seed=5, dtype=torch.float32)
    ours = (guided_backprop if mode == "guided" else deconvnet)(model, x, 1)
    ref_cls = captum_attr.GuidedBackprop if mode == "guided" else captum_attr.Deconvolution
    with pytest.warns(UserWarning):  # Captum warns on every call
        ref = ref_cls(net).attribute(x.clone().requires_grad_(), target=1)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


def test_guided_backprop_differs_from_gradient_on_relu6_model() -> None:
    """Where Captum would silently return the plain gradient, convlens applies the rule."""
    net = ReluMLPConv(nn.ReLU6, seed=6).double().eval()
    model = convlens.wrap(net, input_size=6, mean=0.5, std=0.25, resize=None)
    x = _x(1, 6, seed=6)
    guided, plain = guided_backprop(model, x, 0), saliency(model, x, 0)
    assert not torch.allclose(guided, plain, atol=1e-6)
