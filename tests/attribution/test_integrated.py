"""Integrated Gradients against closed forms, completeness, Captum and an adaptive-vs-uniform race."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import convlens
from convlens.attribution.integrated import (
    adaptive_quadrature,
    baseline_input,
    completeness_error,
    integrated_gradients,
    integrated_gradients_with_error,
    uniform_quadrature,
)
from convlens.errors import BadInputError
from convlens.targets import Neuron

from helpers.tiny import TinyConvNet


def _model(module: nn.Module, size: int = 16) -> convlens.Model:
    module.eval()
    return convlens.wrap(
        module, input_size=size, mean=0.5, std=0.25, resize=None, labels=[f"c{i}" for i in range(5)]
    )


def _x(
    n: int = 2, size: int = 16, seed: int = 0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class Linear(nn.Module):
    """F(z) = W z + b: IG is exactly (x - x') * W[c] for every quadrature."""

    def __init__(self, size: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * size * size, 5)
        with torch.no_grad():
            self.fc.weight.copy_(
                torch.randn(5, 3 * size * size, generator=torch.Generator().manual_seed(5))
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z.flatten(1))


class Ramp(nn.Module):
    """A score that saturates early, like EfficientNet-Lite0's on the path from black: it
    rises from 0 to 10 between 2 % and 4.5 % of the path (a piecewise-linear ramp), plus a
    gentle per-pixel nonlinearity. Uniform steps straddle the ramp's kinks; steps placed by
    the adaptive scan crowd into it."""

    def __init__(self, start: float = 0.02, end: float = 0.045) -> None:
        super().__init__()
        self.start, self.end = start, end

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # black is pixel 0 = input -2 (mean 0.5, std 0.25); s runs from 0 at black to 1 at a
        # constant image of input value 2, so along the path to such images s = alpha
        s = (z + 2).mean(dim=(1, 2, 3)) / 4
        smooth = 0.05 * torch.tanh(z).mean(dim=(1, 2, 3))
        ramp = 10 * torch.clamp((s - self.start) / (self.end - self.start), 0, 1)
        return torch.stack([ramp + smooth, -ramp, smooth, s, 2 * s], dim=1)


# -- closed forms and completeness ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "n_steps"),
    [("riemann", 1), ("riemann", 7), ("trapezoid", 2), ("trapezoid", 5), ("adaptive", 3)],
)
def test_linear_model_gives_difference_times_weight_exactly(method: str, n_steps: int) -> None:
    net = Linear().double()
    model = _model(net, 8)
    x = _x(3, 8, seed=1)
    user = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for baseline in ("black", "blur", user):
        base = baseline_input(model, x, baseline, blur_sigma=1.5)
        expected = (x - base) * net.fc.weight[[0, 3, 4]].view(3, 3, 8, 8)
        attribution, error = integrated_gradients_with_error(
            model,
            x,
            [0, 3, 4],
            baseline=baseline,
            n_steps=n_steps,
            quadrature=method,
            blur_sigma=1.5,
        )
        torch.testing.assert_close(attribution, expected, atol=1e-12, rtol=1e-12)
        assert float(error.max()) < 1e-12


def test_completeness_error_shrinks_with_steps_on_a_relu_net() -> None:
    # TinyConvNet (ReLU, BatchNorm, ReLU6) is piecewise linear along the path: the rules err
    # only on steps holding a kink, so the error falls (roughly as 1/n, unevenly) with steps
    model = _model(TinyConvNet(seed=4).double(), 8)
    x = _x(2, 8, seed=4) * 2
    for quadrature in ("riemann", "trapezoid", "adaptive"):
        errors = [
            float(
                integrated_gradients_with_error(
                    model, x, [0, 1], n_steps=n, quadrature=quadrature, chunk=4096
                )[1].max()
            )
            for n in (4, 128, 4096)
        ]
        assert errors[0] > 0.05, errors  # coarse steps do err: the check has something to see
        assert errors[1] < errors[0] and errors[2] < errors[1] / 5 and errors[2] < 1e-3, errors
    errors = [
        float(integrated_gradients_with_error(model, x, [0, 1], n_steps=n, chunk=4096)[1].max())
        for n in (4, 32, 256, 2048)
    ]
    assert all(a > 2 * b for a, b in itertools.pairwise(errors)) and errors[-1] < 1e-3, errors


def test_error_is_the_completeness_gap_and_sums_match_score_differences() -> None:
    net = TinyConvNet(seed=5).double()
    model = _model(net)
    x = _x(2, seed=5)
    for method in ("riemann", "adaptive"):
        attribution, error = integrated_gradients_with_error(
            model, x, [1, 3], n_steps=6, quadrature=method
        )
        base = baseline_input(model, x, "black")
        with torch.no_grad():
            change = net(x)[[0, 1], [1, 3]] - net(base)[[0, 1], [1, 3]]
        expected = (attribution.flatten(1).sum(1) - change).abs() / change.abs()
        torch.testing.assert_close(error, expected, atol=1e-12, rtol=1e-9)
    assert completeness_error(torch.zeros(1, 3), torch.zeros(1)).item() == 0
    assert completeness_error(torch.ones(1, 3), torch.zeros(1)).item() == float("inf")


def test_neuron_callable_and_predicted_targets() -> None:
    net = TinyConvNet(seed=4).double()
    model = _model(net, 8)
    x = _x(2, 8, seed=4) * 2
    # a neuron and a callable target obey completeness too
    for target in (Neuron("relu2", 3, 1, 2), lambda out: out[:, 0] - out[:, 4]):
        coarse, fine = (
            float(integrated_gradients_with_error(model, x, target, n_steps=n, chunk=4096)[1].max())
            for n in (4, 4096)
        )
        assert fine < 1e-3 and fine < coarse / 50, (coarse, fine)
    # the predicted target is the class predicted for x, not for the points on the path
    predicted = net(x).argmax(1)
    torch.testing.assert_close(
        integrated_gradients(model, x, None, n_steps=5),
        integrated_gradients(model, x, predicted, n_steps=5),
    )


def test_chunk_does_not_change_the_result_and_progress_counts_evaluations() -> None:
    model = _model(TinyConvNet(seed=7))
    x = _x(2, seed=7, dtype=torch.float32)
    for method in ("riemann", "adaptive"):
        calls: list[tuple[int, int]] = []
        one = integrated_gradients(
            model,
            x,
            2,
            n_steps=6,
            quadrature=method,
            chunk=1,
            n_scan=4,
            progress=lambda d, t, calls=calls: calls.append((d, t)),
        )
        many = integrated_gradients(model, x, 2, n_steps=6, quadrature=method, chunk=64, n_scan=4)
        torch.testing.assert_close(one, many, atol=1e-6, rtol=1e-5)
        total = 2 * (6 + (5 if method == "adaptive" else 0))
        assert calls[-1] == (total, total) and len(calls) == 2 * 6 + (method == "adaptive")


# -- quadratures and baselines ---------------------------------------------------------------


def test_uniform_and_adaptive_quadratures() -> None:
    a, w = uniform_quadrature(4, "riemann")
    torch.testing.assert_close(a, torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=torch.float64))
    torch.testing.assert_close(w, torch.full((4,), 0.25, dtype=torch.float64))
    a, w = uniform_quadrature(5, "trapezoid")
    torch.testing.assert_close(a, torch.linspace(0, 1, 5, dtype=torch.float64))
    torch.testing.assert_close(
        w, torch.tensor([0.125, 0.25, 0.25, 0.25, 0.125], dtype=torch.float64)
    )
    # all change on scan interval 2 of 4: (1 - u) of the steps land there, evenly
    scores = torch.tensor([0.0, 0.0, 0.0, 5.0, 5.0])
    a, w = adaptive_quadrature(scores, 20, uniform_share=0.2)
    inside = (a > 0.5) & (a < 0.75)
    assert int(inside.sum()) == 17  # 0.8 + 0.2 / 4 = 85 % of 20 steps
    torch.testing.assert_close(w[inside], torch.full((17,), 0.25 / 17, dtype=torch.float64))
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert bool((a[1:] > a[:-1]).all()) and bool((w > 0).all())
    # uniform_share = 1 is the midpoint rule, whatever the scan saw
    a, w = adaptive_quadrature(scores, 6, uniform_share=1.0)
    ua, uw = uniform_quadrature(6)
    torch.testing.assert_close(a, ua)
    torch.testing.assert_close(w, uw)


def test_baselines() -> None:
    pytest.importorskip("scipy")
    from scipy.ndimage import gaussian_filter

    model = _model(TinyConvNet(), 16)
    x = _x(2, seed=8)
    torch.testing.assert_close(
        model.denormalize(baseline_input(model, x, "black")), torch.zeros_like(x)
    )
    # blur: scipy's Gaussian filter with the same truncation and replicated ('nearest') borders
    blurred = baseline_input(model, x, "blur", blur_sigma=2.0)
    reference = torch.from_numpy(
        gaussian_filter(x.numpy(), sigma=(0, 0, 2.0, 2.0), mode="nearest", truncate=3.0)
    )
    torch.testing.assert_close(blurred, reference, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(baseline_input(model, x, "blur", blur_sigma=0), x)
    # noise: uniform pixels in [0, 1], one draw shared by every image, set by the generator
    noise = baseline_input(model, x, "noise", generator=torch.Generator().manual_seed(3))
    pixels = model.denormalize(noise)
    assert float(pixels.min()) >= 0 and float(pixels.max()) <= 1 and float(pixels.std()) > 0.2
    torch.testing.assert_close(noise[0], noise[1])
    torch.testing.assert_close(
        noise, baseline_input(model, x, "noise", generator=torch.Generator().manual_seed(3))
    )
    # a user tensor broadcasts; a wrong shape is refused with both shapes named
    user = torch.randn(3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(baseline_input(model, x, user), user.expand_as(x))
    with pytest.raises(BadInputError, match=r"baseline of shape \(3, 8, 8\) does not broadcast"):
        baseline_input(model, x, torch.zeros(3, 8, 8))


def test_bad_options_are_refused() -> None:
    model = _model(TinyConvNet())
    x = _x(1, dtype=torch.float32)
    for options, match in [
        ({"n_steps": 0}, "n_steps=0"),
        ({"quadrature": "simpson"}, "quadrature='simpson'"),
        ({"chunk": 0}, "chunk=0"),
        ({"quadrature": "trapezoid", "n_steps": 1}, "at least 2 steps"),
        ({"quadrature": "adaptive", "uniform_share": 0.0}, "uniform_share=0.0"),
        ({"baseline": "white"}, "baseline='white'"),
        ({"baseline": "blur", "blur_sigma": -1.0}, "blur_sigma=-1.0"),
    ]:
        with pytest.raises(BadInputError, match=match):
            integrated_gradients(model, x, 0, **options)


# -- adaptive beats uniform where the score changes abruptly ---------------------------------


def _steps_needed(
    model: convlens.Model, x: torch.Tensor, quadrature: str, budget: list[int], tolerance: float
) -> int | None:
    for n in budget:
        _, error = integrated_gradients_with_error(
            model, x, 0, n_steps=n, quadrature=quadrature, n_scan=16, chunk=1024
        )
        if float(error.max()) < tolerance:
            return n
    return None


def test_adaptive_needs_fewer_evaluations_than_uniform_steps_on_a_sharp_transition() -> None:
    model = _model(Ramp().double())
    x = 2.0 + 0.05 * _x(2, seed=9)  # near-constant images: along the path, s ~ alpha
    budget = [16, 32, 64, 128, 256, 512, 1024]
    needed = [_steps_needed(model, x, q, budget, 0.01) for q in ("riemann", "trapezoid")]
    uniform = min(2 * budget[-1] if n is None else n for n in needed)  # None: more than the budget
    adaptive = _steps_needed(model, x, "adaptive", budget, 0.01)
    assert adaptive is not None
    # count the scan's 17 forward passes as full evaluations: adaptive still needs far fewer
    assert adaptive + 17 < uniform / 4, (adaptive, needed)


# -- Captum ----------------------------------------------------------------------------------------


@pytest.mark.captum
def test_matches_captum_integrated_gradients() -> None:
    captum_attr = pytest.importorskip("captum.attr")
    net = TinyConvNet(seed=10).eval()
    model = _model(net)
    x = _x(3, seed=10, dtype=torch.float32)
    user = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(11))
    ig = captum_attr.IntegratedGradients(net)
    targets = [0, 2, 4]
    for baseline, captum_baseline in [
        ("black", model.normalize(torch.zeros(1, 3, 16, 16))),
        (user, user),
    ]:
        ours = integrated_gradients(
            model, x, targets, baseline=baseline, n_steps=20, quadrature="riemann", chunk=7
        )
        ref = ig.attribute(
            x, baselines=captum_baseline, target=targets, n_steps=20, method="riemann_middle"
        )
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
        # Captum's trapezoid uses the same points with weights 1/n (ends halved), which sum to
        # (n - 1)/n; the trapezoid rule's weights are 1/(n - 1): the results differ by n/(n - 1)
        ours = integrated_gradients(
            model, x, targets, baseline=baseline, n_steps=20, quadrature="trapezoid"
        )
        ref = ig.attribute(
            x, baselines=captum_baseline, target=targets, n_steps=20, method="riemann_trapezoid"
        )
        torch.testing.assert_close(ours, ref * 20 / 19, atol=1e-5, rtol=1e-4)
