"""DeepLIFT (rescale) and GradientSHAP against Captum, completeness and hand references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import convlens
from convlens.attribution.deeplift import deeplift, deeplift_with_delta
from convlens.attribution.gradient_shap import gradient_shap, gradient_shap_draws


def _net(act: type[nn.Module] = nn.ReLU, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), act(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), act(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10), act(), nn.Linear(10, 4),
    ).eval()  # fmt: skip


def _model(module: nn.Module) -> convlens.Model:
    return convlens.wrap(
        module, input_size=16, mean=0.5, std=0.25, resize=None, labels=list("abcd"), name="tiny"
    )


def _x(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _randomise_bn(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return module


# -- DeepLIFT ---------------------------------------------------------------------------------


@pytest.mark.captum
@pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")
@pytest.mark.parametrize("baseline", ["black", "random"])
def test_deeplift_equals_captum_on_a_relu_net(baseline: str) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    module = _randomise_bn(_net())
    model, x = _model(module), _x()
    base = (
        model.normalize(torch.zeros_like(x))
        if baseline == "black"
        else torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    )
    got = deeplift(model, x, 2, baseline=base)
    ref = (
        captum_attr.DeepLift(module)
        .attribute(x.clone().requires_grad_(True), baselines=base, target=2)
        .detach()
    )
    assert torch.allclose(got, ref, atol=1e-5 * max(1.0, float(ref.abs().max())))
    # and it is not the gradient x input (which differs from DeepLIFT on a ReLU net)
    assert not torch.allclose(
        got,
        captum_attr.InputXGradient(module)
        .attribute((x - base).requires_grad_(True), target=2)
        .detach(),
        atol=1e-3,
    )


@pytest.mark.parametrize("act", [nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.ELU])
def test_deeplift_sums_to_the_score_change_for_any_elementwise_activation(
    act: type[nn.Module],
) -> None:
    model, x = _model(_randomise_bn(_net(act))), _x(3)
    attribution, delta = deeplift_with_delta(model, x, 1)
    with torch.no_grad():
        base = model.normalize(torch.zeros_like(x))
        by_hand = model.module(x)[:, 1] - model.module(base)[:, 1]
    assert torch.allclose(delta, by_hand, atol=1e-5)
    assert torch.allclose(
        attribution.flatten(1).sum(dim=1), by_hand, atol=1e-4 * max(1.0, float(by_hand.abs().max()))
    )


def test_deeplift_handles_inplace_and_reused_activations() -> None:
    class Reused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.act = nn.ReLU6(inplace=True)
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.act(self.c2(self.act(self.c1(x)))).mean(dim=(2, 3)))

    model, x = _model(Reused().eval()), _x()
    attribution, delta = deeplift_with_delta(model, x, 0)
    assert torch.allclose(attribution.flatten(1).sum(dim=1), delta, atol=1e-5)


# -- GradientSHAP ------------------------------------------------------------------------------


@pytest.mark.captum
def test_gradient_shap_equals_captum_with_the_same_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    module = _net()
    model, x = _model(module), _x(1)
    n = 12
    base = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    got = gradient_shap(
        model,
        x,
        3,
        baselines=base,
        n_samples=n,
        stdev=0.0,
        chunk=5,
        generator=torch.Generator().manual_seed(7),
    )
    # the points on the path that our generator drew, fed to Captum's numpy draw
    _, alphas, _ = gradient_shap_draws(n, 1, (3, 16, 16), 0.0, torch.Generator().manual_seed(7))
    monkeypatch.setattr(
        np.random, "uniform", lambda low, high, size: alphas.double().numpy()[:size]
    )
    ref = (
        captum_attr.GradientShap(module)
        .attribute(
            x.clone().requires_grad_(True), baselines=base, target=3, n_samples=n, stdevs=0.0
        )
        .detach()
    )
    assert torch.allclose(got, ref, atol=1e-5 * max(1.0, float(ref.abs().max())))


def test_gradient_shap_with_noise_is_the_hand_estimate() -> None:
    module = _net()
    model, x = _model(module), _x(2)
    pool = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    n, stdev = 6, 0.3
    got = gradient_shap(
        model,
        x,
        1,
        baselines=pool,
        n_samples=n,
        stdev=stdev,
        chunk=4,
        generator=torch.Generator().manual_seed(8),
    )
    g = torch.Generator().manual_seed(8)
    which = torch.randint(0, 3, (n,), generator=g)
    alphas = torch.rand(n, generator=g)
    noise = torch.randn((n, 3, 16, 16), generator=g) * stdev
    for i in range(2):
        total = torch.zeros(3, 16, 16)
        for k in range(n):
            noisy, b = x[i] + noise[k], pool[which[k]]
            z = (b + alphas[k] * (noisy - b))[None].requires_grad_(True)
            (grad,) = torch.autograd.grad(module(z)[0, 1], z)
            total += (noisy - b) * grad[0]
        assert torch.allclose(got[i], total / n, atol=1e-5)


def test_gradient_shap_is_exact_on_a_linear_model() -> None:
    """On a linear score the gradient is the weight wherever it is taken, so with no noise
    every draw gives w * (x - b): the sum is F(x) - F(b) for one baseline."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).eval()
    model, x = _model(module), _x(2)
    got = gradient_shap(
        model,
        x,
        2,
        baselines="black",
        n_samples=7,
        stdev=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    base = model.normalize(torch.zeros_like(x))
    expected = module[1].weight[2].view(3, 16, 16) * (x - base)
    assert torch.allclose(got, expected, atol=1e-5)
