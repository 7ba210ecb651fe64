"""SmoothGrad, SmoothGrad-squared and VarGrad against explicit averages and Captum's NoiseTunnel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convlens
from convlens.attribution.gradient import saliency
from convlens.attribution.guided import guided_backprop
from convlens.attribution.integrated import integrated_gradients
from convlens.attribution.smooth import smooth, smoothgrad, smoothgrad_sq, vargrad
from convlens.errors import BadInputError

from helpers.tiny import TinyConvNet


def _model(module: nn.Module) -> convlens.Model:
    module.eval()
    return convlens.wrap(
        module, input_size=16, mean=0.5, std=0.25, resize=None, labels=[f"c{i}" for i in range(5)]
    )


def _x(n: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _noisy(x: torch.Tensor, n_samples: int, sigma: float, seed: int) -> torch.Tensor:
    """The documented noise, built independently: image i, sample s is
    ``x_i + sigma * (max x_i - min x_i) * z_s`` with ``z_s`` the s-th ``randn(C, H, W)`` draw.
    Returned item-major ``(N * n_samples, C, H, W)``, Captum's order."""
    g = torch.Generator().manual_seed(seed)
    z = torch.stack(
        [torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for _ in range(n_samples)]
    )
    scale = sigma * (x.flatten(1).max(1).values - x.flatten(1).min(1).values)
    return torch.cat([x[i] + scale[i] * z for i in range(x.shape[0])])


def _per_image(values: torch.Tensor, n: int) -> torch.Tensor:
    return values.view(n, -1, *values.shape[1:])


def test_sigma_zero_is_the_base_method() -> None:
    model = _model(TinyConvNet(seed=1))
    x = _x(3, seed=1)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(
        smoothgrad(model, x, 2, sigma=0.0, n_samples=4, generator=g),
        saliency(model, x, 2),
        atol=1e-7,
        rtol=1e-6,
    )
    torch.testing.assert_close(
        smoothgrad(model, x, 2, sigma=0.0, n_samples=4, base_method="guided_backprop", generator=g),
        guided_backprop(model, x, 2),
        atol=1e-7,
        rtol=1e-6,
    )
    assert float(vargrad(model, x, 2, sigma=0.0, n_samples=4, generator=g).abs().max()) == 0.0
    torch.testing.assert_close(
        smoothgrad_sq(model, x, 2, sigma=0.0, n_samples=4, generator=g),
        saliency(model, x, 2) ** 2,
        atol=1e-7,
        rtol=1e-6,
    )


def test_mean_square_and_variance_of_the_base_method_over_the_documented_noise() -> None:
    model = _model(TinyConvNet(seed=2).double())
    x = _x(2, seed=2, dtype=torch.float64)
    noisy = _noisy(x, 5, 0.2, seed=3)
    per_sample = _per_image(saliency(model, noisy, torch.tensor([1] * 5 + [4] * 5)), 2)
    options = {"n_samples": 5, "sigma": 0.2, "chunk": 3}
    torch.testing.assert_close(
        smoothgrad(model, x, [1, 4], generator=torch.Generator().manual_seed(3), **options),
        per_sample.mean(1),
    )
    torch.testing.assert_close(
        smoothgrad_sq(model, x, [1, 4], generator=torch.Generator().manual_seed(3), **options),
        (per_sample**2).mean(1),
    )
    torch.testing.assert_close(
        vargrad(model, x, [1, 4], generator=torch.Generator().manual_seed(3), **options),
        per_sample.var(1, unbiased=False),
    )
    # any registered method by name: guided backprop over the same noisy copies
    guided = _per_image(guided_backprop(model, noisy, torch.tensor([1] * 5 + [4] * 5)), 2).mean(1)
    torch.testing.assert_close(
        smoothgrad(
            model,
            x,
            [1, 4],
            base_method="guided_backprop",
            generator=torch.Generator().manual_seed(3),
            **options,
        ),
        guided,
    )


def test_noise_level_is_sigma_times_the_image_range() -> None:
    model = _model(TinyConvNet())
    x = _x(2, seed=4) * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)  # two images, two ranges
    identity = lambda m, z, t: z  # noqa: E731  (the noisy inputs themselves)
    var = smooth(
        identity,
        model,
        x,
        0,
        n_samples=400,
        sigma=0.1,
        mode="var",
        chunk=64,
        generator=torch.Generator().manual_seed(5),
    )
    expected = (0.1 * (x.flatten(1).max(1).values - x.flatten(1).min(1).values)) ** 2
    torch.testing.assert_close(var.flatten(1).mean(1), expected, rtol=0.03, atol=0)
    mean = smooth(
        identity,
        model,
        x,
        0,
        n_samples=400,
        sigma=0.1,
        chunk=64,
        generator=torch.Generator().manual_seed(5),
    )
    assert float((mean - x).abs().mean()) < 0.2 * float(expected.sqrt().min())  # zero-mean noise


def test_seeded_chunk_invariant_and_batch_equals_items() -> None:
    model = _model(TinyConvNet(seed=6))
    x = _x(3, seed=6)
    runs = [
        vargrad(model, x, 3, n_samples=7, chunk=c, generator=torch.Generator().manual_seed(9))
        for c in (1, 4, 100)
    ]
    for other in runs[1:]:
        torch.testing.assert_close(runs[0], other, atol=1e-6, rtol=1e-5)
    assert torch.equal(
        runs[2],
        vargrad(model, x, 3, n_samples=7, chunk=100, generator=torch.Generator().manual_seed(9)),
    )
    assert not torch.allclose(
        runs[2],
        vargrad(model, x, 3, n_samples=7, chunk=100, generator=torch.Generator().manual_seed(10)),
    )
    alone = torch.cat(
        [
            vargrad(model, x[i : i + 1], 3, n_samples=7, generator=torch.Generator().manual_seed(9))
            for i in range(3)
        ]
    )
    torch.testing.assert_close(runs[0], alone, atol=1e-6, rtol=1e-5)


def test_wraps_callables_and_random_methods() -> None:
    model = _model(TinyConvNet(seed=7).double())
    x = _x(1, seed=7, dtype=torch.float64)

    # a plain callable as the method, and a callable target
    def doubled(m: convlens.Model, z: torch.Tensor, t: object) -> torch.Tensor:
        return 2 * saliency(m, z, t)

    def margin(out: torch.Tensor) -> torch.Tensor:
        return out[:, 0] - out[:, 1]

    got = smooth(doubled, model, x, margin, n_samples=3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(
        got,
        2 * smoothgrad(model, x, margin, n_samples=3, generator=torch.Generator().manual_seed(4)),
    )
    # integrated gradients (random=True) gets the generator and its own options
    noisy = _noisy(x, 3, 0.1, seed=8)
    expected = integrated_gradients(model, noisy, 2, n_steps=3).mean(0, keepdim=True)
    got = smoothgrad(
        model,
        x,
        2,
        n_samples=3,
        sigma=0.1,
        base_method="integrated_gradients",
        n_steps=3,
        generator=torch.Generator().manual_seed(8),
    )
    torch.testing.assert_close(got, expected)
    # a predicted target means the class predicted for the clean image
    predicted = model.module(x).argmax(1)
    torch.testing.assert_close(
        smoothgrad(model, x, None, n_samples=3, generator=torch.Generator().manual_seed(1)),
        smoothgrad(model, x, predicted, n_samples=3, generator=torch.Generator().manual_seed(1)),
    )


def test_a_layer_method_gets_its_default_layer() -> None:
    from convlens.attribution.base import METHODS, default_cam_layer

    if "gradcam" not in METHODS:
        pytest.fail("gradcam is not registered (src/convlens/attribution/cam.py)")
    model = _model(TinyConvNet(seed=9))
    x = _x(2, seed=9)
    got = smooth("gradcam", model, x, 1, n_samples=2, sigma=0.0, generator=torch.Generator())
    torch.testing.assert_close(
        got,
        METHODS["gradcam"].fn(model, x, 1, layer=default_cam_layer(model)),
        atol=1e-6,
        rtol=1e-5,
    )


def test_bad_options_are_refused() -> None:
    model = _model(TinyConvNet())
    x = _x(1)
    for options, match in [
        ({"n_samples": 0}, "n_samples=0"),
        ({"sigma": -0.1}, "sigma=-0.1"),
        ({"mode": "max"}, "mode='max'"),
        ({"chunk": 0}, "chunk=0"),
    ]:
        with pytest.raises(BadInputError, match=match):
            smooth("saliency", model, x, 0, **options)
    with pytest.raises(BadInputError, match="'no_such_method' is not an attribution method"):
        smooth("no_such_method", model, x, 0)
    with pytest.raises(BadInputError, match="smoothing a smoothed method"):
        smoothgrad(model, x, 0, base_method="vargrad")


@pytest.mark.captum
@pytest.mark.parametrize(
    ("ours", "nt_type"),
    [(smoothgrad, "smoothgrad"), (smoothgrad_sq, "smoothgrad_sq"), (vargrad, "vargrad")],
)
def test_matches_captum_noise_tunnel_given_the_same_noise(
    ours, nt_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    captum_attr = pytest.importorskip("captum.attr")
    net = TinyConvNet(seed=11).eval()
    model = _model(net)
    x = _x(2, seed=11)
    n, sigma = 6, 0.15
    # NoiseTunnel draws its noise with torch.normal(0, stdev); hand it ours (item-major, as
    # it expects) so both sides average the same noisy inputs and only the algorithms differ
    noise = _noisy(x, n, sigma, seed=12) - x.repeat_interleave(n, dim=0)
    monkeypatch.setattr(torch, "normal", lambda mean, std: noise.clone())
    ref = captum_attr.NoiseTunnel(captum_attr.Saliency(net)).attribute(
        x.clone().requires_grad_(),
        nt_type=nt_type,
        nt_samples=n,
        stdevs=1.0,
        target=[0, 3],
        abs=False,
    )
    monkeypatch.undo()
    torch.testing.assert_close(
        ours(
            model,
            x,
            [0, 3],
            n_samples=n,
            sigma=sigma,
            chunk=5,
            generator=torch.Generator().manual_seed(12),
        ),
        ref,
        atol=1e-5,
        rtol=1e-4,
    )
