"""Parameterisations (range, shape, seeding, round trips, spectrum, colour statistics) and
transforms (seeded determinism, known geometry, fusion) and the periodic operations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convlens.errors import BadInputError
from convlens.optimize import (
    COLOR_CORRELATION_SQRT,
    FourierParam,
    PixelParam,
    clip_small_gradients,
    clip_small_pixels,
    compose,
    gaussian_blur,
    jitter,
    pad,
    random_rotate,
    random_scale,
    standard_transforms,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(
    n: int = 2,
    c: int = 3,
    h: int = 12,
    w: int = 12,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_gen(seed), dtype=dtype)


# -- parameterisations ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pixel", "fourier"])
@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 3, 15, 22), (3, 1, 9, 8)])
def test_param_shape_range_and_seeding(kind: str, shape: tuple[int, int, int, int]) -> None:
    cls = PixelParam if kind == "pixel" else FourierParam
    param = cls(shape, _gen(0), init_std=3.0)  # large init: the sigmoid must still bound it
    image = param()
    assert image.shape == shape and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.1
    assert torch.equal(image, cls(shape, _gen(0), init_std=3.0)())
    assert not torch.equal(image, cls(shape, _gen(1), init_std=3.0)())
    assert all(p.requires_grad and p.is_leaf for p in param.parameters())
    image.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in param.parameters())


@pytest.mark.parametrize("kind", ["pixel", "fourier"])
@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 3, 15, 22), (2, 1, 9, 8)])
def test_from_image_round_trips(kind: str, shape: tuple[int, int, int, int]) -> None:
    pixels = _image(*shape, seed=1)
    pixels[0, 0, 0, 0], pixels[0, 0, 0, 1] = 0.0, 1.0  # saturated pixels are clamped by eps
    param = (PixelParam if kind == "pixel" else FourierParam).from_image(pixels)
    out = param()
    assert out.dtype == torch.float64 and out.shape == shape
    torch.testing.assert_close(out, pixels.clamp(1e-3, 1 - 1e-3), atol=1e-9, rtol=0)
    # ... and the clamp does not change any 8-bit value
    assert torch.equal((out * 255 + 0.5).floor(), (pixels * 255 + 0.5).floor())
    # set_image moves an existing parameterisation to a new picture
    other = _image(*shape, seed=2)
    param.set_image(other)
    torch.testing.assert_close(param(), other.clamp(1e-3, 1 - 1e-3), atol=1e-9, rtol=0)


def test_from_image_round_trips_in_float32() -> None:
    pixels = _image(2, 3, 32, 32, seed=3, dtype=torch.float32)
    torch.testing.assert_close(
        FourierParam.from_image(pixels)(), pixels.clamp(1e-3, 1 - 1e-3), atol=2e-5, rtol=0
    )


def test_fourier_spectrum_falls_as_one_over_f_to_the_decay_power() -> None:
    """Amplitude of the (pre-sigmoid) image in a low and a high frequency band, averaged
    over many random draws, follows ``f^-decay_power``."""
    n, size = 64, 64
    for power in (0.0, 1.0, 2.0):
        param = FourierParam((n, 1, size, size), _gen(4), decay_power=power, init_std=0.01)
        logits = torch.logit(param().double())
        amp = torch.fft.rfft2(logits, norm="ortho").abs().mean(dim=(0, 1))
        fy = torch.fft.fftfreq(size, dtype=torch.float64)[:, None]
        fx = torch.fft.rfftfreq(size, dtype=torch.float64)[None, :]
        f = (fy**2 + fx**2).sqrt()
        low, high = (f > 0.06) & (f < 0.07), (f > 0.36) & (f < 0.38)
        ratio = (amp[low].mean() / amp[high].mean()).item()
        expected = (f[low].mean() / f[high].mean()).item() ** -power
        assert ratio == pytest.approx(expected, rel=0.15), (power, ratio, expected)


def test_fourier_colours_have_imagenet_covariance() -> None:
    """Decorrelated white noise comes out with the colour correlations of ImageNet pixels
    (Krizhevsky et al. 2012 eigen-decomposition); a transposed matrix would not."""
    eigval = torch.tensor([0.2175, 0.0188, 0.0045], dtype=torch.float64)
    eigvec = torch.tensor(
        [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]],
        dtype=torch.float64,
    )
    imagenet_cov = eigvec @ torch.diag(eigval) @ eigvec.T

    def corr(cov: torch.Tensor) -> torch.Tensor:
        d = cov.diagonal().sqrt()
        return cov / (d[:, None] * d[None, :])

    param = FourierParam(
        (16, 3, 48, 48), _gen(5), decay_power=0.0, init_std=0.05, dtype=torch.float64
    )
    colours = torch.logit(param()).permute(1, 0, 2, 3).reshape(3, -1)
    sample_cov = torch.cov(colours)
    torch.testing.assert_close(corr(sample_cov), corr(imagenet_cov), atol=0.03, rtol=0)
    m = COLOR_CORRELATION_SQRT
    torch.testing.assert_close(m @ m.T * eigval.max(), imagenet_cov, atol=2e-4, rtol=0)
    assert not torch.allclose(corr(m.T @ m), corr(imagenet_cov), atol=0.1)
    # grayscale models skip the colour matrix
    assert not FourierParam((1, 1, 8, 8)).decorrelate and FourierParam((1, 3, 8, 8)).decorrelate


def test_params_refuse_bad_shapes() -> None:
    for bad in [(3, 16, 16), (1, 3, 0, 16)]:
        with pytest.raises(BadInputError):
            FourierParam(bad)
        with pytest.raises(BadInputError):
            PixelParam(bad)
    with pytest.raises(BadInputError):
        PixelParam((1, 3, 4, 4)).set_image(torch.rand(1, 3, 5, 4))
    with pytest.raises(BadInputError):
        FourierParam((1, 3, 4, 4), decay_power=-1)


# -- random transforms ---------------------------------------------------------------------
TRANSFORMS = {
    "jitter": lambda: jitter(3),
    "scale": lambda: random_scale([0.8, 0.9, 1.1, 1.25]),
    "rotate": lambda: random_rotate(20.0),
    "rotate_list": lambda: random_rotate([-15, 0, 15]),
    "standard": lambda: standard_transforms(24),
    "with_pad": lambda: compose(
        [pad(2, "reflect"), jitter(2, padding_mode="grey"), random_rotate(5.0)]
    ),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_are_deterministic_given_the_seed(name: str) -> None:
    t = TRANSFORMS[name]()
    x = _image(6, 3, 24, 24, seed=6)
    a, b, c = t(x, _gen(10)), t(x, _gen(10)), t(x, _gen(11))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # one draw per image: the images of a batch are not all transformed alike
    same = t(x[:1].repeat(6, 1, 1, 1), _gen(12))
    assert any(not torch.equal(same[0], same[i]) for i in range(1, 6))
    # apply(x, params) is deterministic and reproduces the call
    params = t.make_params(x, _gen(10))
    assert torch.equal(t.apply(x, params), a)
    assert t.random


def test_jitter_moves_content_by_the_known_offset() -> None:
    x = _image(2, 3, 16, 16, seed=7)
    t = jitter(4)
    out = t.apply(x, {"dy": torch.tensor([2.0, -1.0]), "dx": torch.tensor([-3.0, 4.0])})
    # out[y, x] = in[y - dy, x - dx] wherever the source is inside the image
    torch.testing.assert_close(out[0, :, 2:, :13], x[0, :, :14, 3:], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1, :, :15, 4:], x[1, :, 1:, :12], atol=1e-6, rtol=0)


def test_rotation_by_90_degrees_is_rot90_counter_clockwise() -> None:
    x = _image(2, 3, 10, 10, seed=8)
    out = random_rotate([90.0]).apply(x, {"degrees": torch.tensor([90.0, -90.0])})
    torch.testing.assert_close(out[0], torch.rot90(x[0], 1, dims=(1, 2)), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], torch.rot90(x[1], -1, dims=(1, 2)), atol=1e-6, rtol=0)


def test_scale_magnifies_about_the_centre() -> None:
    """A linear ramp zoomed by s has its slope multiplied by s about the centre pixel."""
    size = 21
    ramp = (torch.arange(size, dtype=torch.float64) - 10)[None, None, None, :].expand(
        1, 1, size, size
    )
    out = random_scale([2.0]).apply(ramp, {"scale": torch.tensor([2.0])})
    torch.testing.assert_close(out[0, 0, :, 5:16], ramp[0, 0, :, 5:16] / 2, atol=1e-9, rtol=0)


def test_compose_fuses_affine_runs_into_one_resampling(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _image(3, 3, 12, 12, seed=9)
    t = compose([jitter(2), random_rotate([90.0]), jitter(1)])
    params = t.make_params(x, _gen(13))
    calls = []
    original = F.grid_sample

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "grid_sample", counting)
    fused = t.apply(x, params)
    assert len(calls) == 1
    # the same as applying the three one after another (all moves are exact on the pixel grid)
    step = x
    for i, part in enumerate(t.transforms):
        step = part.apply(step, params[str(i)])
    inner = (slice(None), slice(None), slice(3, 9), slice(3, 9))  # away from the reflected border
    torch.testing.assert_close(fused[inner], step[inner], atol=1e-6, rtol=0)


def test_pad_and_bad_transform_arguments() -> None:
    x = _image(1, 3, 4, 5, seed=10)
    out = pad(2)(x)
    assert out.shape == (1, 3, 8, 9)
    assert torch.equal(out[:, :, 2:6, 2:7], x) and bool((out[:, :, 0] == 0.5).all())
    assert not pad(2).random
    for bad in (
        lambda: jitter(-1),
        lambda: jitter(1.5),
        lambda: random_scale([]),
        lambda: random_scale(1.1),  # type: ignore[arg-type]
        lambda: random_rotate(-3.0),
        lambda: jitter(2, padding_mode="wrap"),
        lambda: pad(1, "mirror"),
        lambda: compose([None]),
    ):  # type: ignore[list-item]
        with pytest.raises(BadInputError):
            bad()


# -- periodic operations -------------------------------------------------------------------
def test_gaussian_blur_matches_scipy() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _image(2, 3, 20, 17, seed=11)
    for sigma in (0.5, 1.0, 2.0):
        ours = gaussian_blur(x, sigma)
        ref = np.stack(
            [
                [ndimage.gaussian_filter(ch, sigma, mode="mirror", truncate=4.0) for ch in img]
                for img in x.numpy()
            ]
        )
        torch.testing.assert_close(ours, torch.from_numpy(ref), atol=1e-10, rtol=0)
    constant = torch.full((1, 3, 8, 8), 0.3, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(constant, 3.0), constant)
    with pytest.raises(BadInputError):
        gaussian_blur(x, 0.0)


def test_clip_small_pixels_greys_the_weakest_pixels() -> None:
    x = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    x[0, :, 0, 0] = torch.tensor([0.9, 0.5, 0.5])  # norm 0.4
    x[0, :, 0, 1] = torch.tensor([0.5, 0.3, 0.5])  # 0.2
    x[0, :, 1, 0] = torch.tensor([0.55, 0.5, 0.5])  # 0.05
    x[0, :, 1, 1] = torch.tensor([0.5, 0.5, 0.6])  # 0.1
    out = clip_small_pixels(x, 50)
    expected = x.clone()
    expected[0, :, 1, :] = 0.5
    torch.testing.assert_close(out, expected)
    assert torch.equal(clip_small_pixels(x, 0), x)


def test_clip_small_gradients_keeps_only_the_largest() -> None:
    g = torch.zeros(2, 3, 2, 2, dtype=torch.float64)
    g[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    g[1, 1] = torch.tensor([[-4.0, 0.5], [0.1, -2.0]])
    out = clip_small_gradients(g, 50)
    expected = g.clone()
    expected[0, :, 0, :] = 0
    expected[1, :, 0, 1] = 0
    expected[1, :, 1, 0] = 0
    torch.testing.assert_close(out, expected)
    # Fourier-shaped gradients (B, C, H, W', 2): the magnitude pools channels and the complex pair
    spec = torch.zeros(1, 3, 2, 2, 2, dtype=torch.float64)
    spec[0, 1, 0, 0] = torch.tensor([3.0, 4.0])  # 5
    spec[0, 2, 1, 1, 1] = 0.1
    spec[0, 0, 0, 1, 0] = 2.0
    kept = clip_small_gradients(spec, 50)
    assert (
        kept[0, :, 0, 0].abs().sum() == 7
        and kept[0, :, 0, 1].abs().sum() == 2
        and kept[0, :, 1, 1].abs().sum() == 0
    )
    with pytest.raises(BadInputError):
        clip_small_gradients(g, 100)
