"""convlens.blur: the one Gaussian blur, against scipy.ndimage and a direct sum by hand.

Each caller's convention is checked through the caller (the path baseline, the deletion fill,
the feature-visualisation transform), so a change of radius or border in any of them fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

import convlens
from convlens.attribution.integrated import baseline_input
from convlens.blur import gaussian_blur, gaussian_kernel, gaussian_radius
from convlens.errors import BadInputError
from convlens.metrics.deletion import fill_image
from convlens.optimize.transforms import gaussian_blur as engine_blur


def _image(n: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(
        n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _scipy(x: torch.Tensor, sigma: float, mode: str, radius: int) -> torch.Tensor:
    ref = [
        [gaussian_filter(ch, sigma, mode=mode, radius=radius) for ch in img] for img in x.numpy()
    ]
    return torch.from_numpy(np.asarray(ref))


def _model(channels: int, size: int) -> convlens.Model:
    return convlens.wrap(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2)),
        input_size=size,
        mean=0.0,
        std=1.0,
        channels=channels,
        resize=None,
        labels=["a", "b"],
        name="hand",
    )


@pytest.mark.parametrize("border, mode", [("reflect", "mirror"), ("replicate", "nearest")])
@pytest.mark.parametrize("sigma, radius", [(0.7, 2), (1.1, 4), (2.0, 5)])
def test_matches_scipy_for_each_border(border: str, mode: str, sigma: float, radius: int) -> None:
    x = _image(2, 3, 13, 17, seed=1)
    got = gaussian_blur(x, sigma, radius=radius, border=border)  # type: ignore[arg-type]
    torch.testing.assert_close(got, _scipy(x, sigma, mode, radius), atol=1e-12, rtol=0)


def test_default_radius_is_scipys_truncate_4() -> None:
    x = _image(1, 2, 20, 21, seed=2)
    for sigma in (0.6, 1.3, 2.2):
        ref = np.stack([gaussian_filter(ch, sigma, mode="mirror") for ch in x[0].numpy()])
        torch.testing.assert_close(
            gaussian_blur(x, sigma)[0], torch.from_numpy(ref), atol=1e-12, rtol=0
        )


def test_radius_rules() -> None:
    # scipy: int(truncate * sigma + 0.5); round_up: the smallest radius covering truncate * sigma
    assert gaussian_radius(1.1, 3.0) == 3 and gaussian_radius(1.1, 3.0, round_up=True) == 4
    assert gaussian_radius(1.5, 3.0) == 5 == gaussian_radius(1.5, 3.0, round_up=True)
    assert gaussian_radius(1.0) == 4
    k = gaussian_kernel(1.5, 3, dtype=torch.float64)
    by_hand = torch.tensor(
        [math.exp(-(t**2) / (2 * 1.5**2)) for t in range(-3, 4)], dtype=torch.float64
    )
    torch.testing.assert_close(k, by_hand / by_hand.sum(), atol=1e-15, rtol=0)


def _mirror(i: int, n: int) -> int:
    # d c b | a b c d | c b a: reflect about the edge pixels (valid for |overhang| < n)
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


def test_a_mirrored_kernel_longer_than_the_side_is_cut_and_renormalised() -> None:
    x = _image(1, 1, 4, 9, seed=3)
    sigma, radius = 3.0, 6  # wider than the 4-pixel height, narrower than the 9-pixel width
    got = gaussian_blur(x, sigma, radius=radius, border="reflect")[0, 0]
    a = x[0, 0].numpy()
    h, w = a.shape

    def weights(r: int) -> list[float]:
        v = [math.exp(-(t**2) / (2 * sigma**2)) for t in range(-r, r + 1)]
        return [e / sum(v) for e in v]

    # along the width: the full radius; along the height: cut to h - 1 = 3
    ww, wh = weights(min(radius, w - 1)), weights(min(radius, h - 1))
    rw, rh = (len(ww) - 1) // 2, (len(wh) - 1) // 2
    rows = np.array(
        [
            [
                sum(ww[t + rw] * a[i, _mirror(j + t, w)] for t in range(-rw, rw + 1))
                for j in range(w)
            ]
            for i in range(h)
        ]
    )
    ref = np.array(
        [
            [
                sum(wh[t + rh] * rows[_mirror(i + t, h), j] for t in range(-rh, rh + 1))
                for j in range(w)
            ]
            for i in range(h)
        ]
    )
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("border", ["reflect", "replicate"])
def test_constant_images_stay_constant(border: str) -> None:
    constant = torch.full((1, 3, 5, 7), 0.3, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(constant, 4.0, border=border), constant)  # type: ignore[arg-type]


def test_sigma_zero_copies_and_bad_input_is_refused() -> None:
    x = _image(1, 1, 5, 5, seed=4)
    same = gaussian_blur(x, 0.0)
    assert torch.equal(same, x) and same is not x
    with pytest.raises(BadInputError, match="sigma"):
        gaussian_blur(x, -1.0)
    with pytest.raises(BadInputError, match="border"):
        gaussian_blur(x, 1.0, border="wrap")  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match=r"\(N, C, H, W\)"):
        gaussian_blur(x[0], 1.0)


# -- each caller keeps its convention ------------------------------------------------------
def test_path_baseline_blur_repeats_edges_with_radius_ceil_3_sigma() -> None:
    x = _image(2, 1, 12, 12, seed=5).float()
    got = baseline_input(_model(1, 12), x, "blur", blur_sigma=1.1)
    torch.testing.assert_close(
        got.double(), _scipy(x.double(), 1.1, "nearest", 4), atol=1e-6, rtol=0
    )


def test_deletion_fill_mirrors_edges_with_radius_ceil_3_sigma() -> None:
    x = _image(1, 2, 16, 20, seed=6)
    got = fill_image(_model(2, 16), x, "blur", blur_sigma=1.1)
    torch.testing.assert_close(got, _scipy(x, 1.1, "mirror", 4), atol=1e-12, rtol=0)


def test_engine_blur_mirrors_edges_with_radius_round_4_sigma_and_refuses_zero() -> None:
    x = _image(1, 3, 20, 20, seed=7)
    torch.testing.assert_close(engine_blur(x, 1.1), _scipy(x, 1.1, "mirror", 4), atol=1e-12, rtol=0)
    torch.testing.assert_close(engine_blur(x, 0.9), _scipy(x, 0.9, "mirror", 4), atol=1e-12, rtol=0)
    with pytest.raises(BadInputError):
        engine_blur(x, 0.0)
