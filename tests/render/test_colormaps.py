"""Map normalisation and colouring, checked against independent numpy and published values."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pytest
import torch

from convlens.errors import BadInputError
from convlens.render.colormaps import (
    COLORBLIND_CMAP,
    DEFAULT_CMAP,
    DIVERGING_CMAP,
    apply_colormap,
    get_cmap,
    is_signed_map,
    normalize_map,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _to_uint8(rgba: tuple[float, ...]) -> np.ndarray:
    return np.rint(np.asarray(rgba) * 255).astype(np.uint8)


# --- normalize_map -------------------------------------------------------------------------


def test_unsigned_divides_by_percentile_and_clips(rng: np.random.Generator) -> None:
    values = rng.exponential(size=(40, 50))
    values[3, 4] = 1e6  # an outlier must not squash everything else towards 0
    expected = np.minimum(values / np.percentile(values, 99.0), 1.0)

    got = normalize_map(values, clip_percentile=99.0)

    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert got.dtype == np.float32
    assert np.mean(got >= 1.0) == pytest.approx(0.01, abs=0.002)  # ~1 % clipped
    assert np.median(got) > 0.1  # not washed out by the outlier


def test_unsigned_with_negatives_is_min_to_percentile(rng: np.random.Generator) -> None:
    values = rng.normal(size=(30, 30)) + 5.0  # all positive ...
    values[0, 0] = -0.001  # ... but one tiny negative: unsigned (below 1 % of the range), min-max
    low, high = values.min(), np.percentile(values, 99.5)

    got = normalize_map(values)

    np.testing.assert_allclose(
        got, np.clip((values - low) / (high - low), 0, 1), rtol=1e-6, atol=1e-6
    )
    assert got[0, 0] == 0.0


def test_signed_keeps_sign_and_zero(rng: np.random.Generator) -> None:
    values = rng.normal(size=(30, 40))
    values[5, 5] = 0.0
    expected = np.clip(values / np.percentile(np.abs(values), 99.5), -1, 1)

    got = normalize_map(values)

    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert got[5, 5] == 0.0
    np.testing.assert_array_equal(np.sign(got), np.sign(values))
    assert got.min() == -1.0 and got.max() == 1.0


def test_signed_auto_detection() -> None:
    assert is_signed_map(np.array([-1.0, 2.0]))
    assert not is_signed_map(np.array([0.0, 2.0]))
    assert not is_signed_map(np.array([-1e-6, 2.0]))  # round-off, not a sign
    assert not is_signed_map(np.array([np.nan, np.nan]))
    assert is_signed_map(torch.tensor([-1.0, 1.0]))


def test_forced_signed_and_unsigned() -> None:
    values = np.array([-2.0, 0.0, 2.0])
    np.testing.assert_allclose(
        normalize_map(values, signed=False, clip_percentile=100), [0.0, 0.5, 1.0]
    )
    np.testing.assert_allclose(
        normalize_map(values, signed=True, clip_percentile=100), [-1.0, 0.0, 1.0]
    )


@pytest.mark.parametrize("constant", [0.0, 3.0, -2.0])
def test_constant_map_gives_no_nan(constant: float) -> None:
    got = normalize_map(np.full((4, 5), constant))
    assert not np.isnan(got).any()
    assert np.all((got >= 0) & (got <= 1))
    if constant == 0.0:
        assert np.all(got == 0.0)


def test_sparse_map_falls_back_to_max() -> None:
    values = np.zeros((100, 100))
    values[0, 0] = 4.0  # 99.5th percentile is 0: dividing by it would give inf/NaN
    got = normalize_map(values)
    assert got[0, 0] == 1.0
    assert np.count_nonzero(got) == 1


def test_nan_stays_nan_and_is_ignored_by_the_scale() -> None:
    values = np.array([[np.nan, 1.0], [2.0, 4.0]])
    got = normalize_map(values, clip_percentile=100)
    assert np.isnan(got[0, 0])
    np.testing.assert_allclose(got[1], [0.5, 1.0])


def test_bad_percentile_is_refused() -> None:
    with pytest.raises(BadInputError, match="clip_percentile"):
        normalize_map(np.ones(3), clip_percentile=0)


# --- apply_colormap ------------------------------------------------------------------------


def test_viridis_endpoints_match_matplotlib_and_published_hex() -> None:
    rgba = apply_colormap(np.array([[0.0, 0.5, 1.0]]))
    assert rgba.shape == (1, 3, 4) and rgba.dtype == np.uint8
    viridis = mpl.colormaps["viridis"]
    np.testing.assert_array_equal(rgba[0, 0], _to_uint8(viridis(0.0)))
    np.testing.assert_array_equal(rgba[0, 2], _to_uint8(viridis(1.0)))
    # The published viridis endpoints, #440154 and #fde725.
    np.testing.assert_array_equal(rgba[0, 0, :3], [0x44, 0x01, 0x54])
    np.testing.assert_array_equal(rgba[0, 2, :3], [0xFD, 0xE7, 0x25])


def test_signed_map_uses_diverging_with_white_centre() -> None:
    values = np.array([[-3.0, 0.0, 3.0]])
    rgba = apply_colormap(values, clip_percentile=100).astype(int)
    negative, zero, positive = rgba[0, 0, :3], rgba[0, 1, :3], rgba[0, 2, :3]

    assert zero.min() >= 235  # near-white
    assert np.ptp(zero) <= 10  # and neutral, not tinted
    assert positive[0] > positive[2] + 50  # red-ish
    assert negative[2] > negative[0] + 50  # blue-ish
    # Matches the diverging colormap's own centre and ends.
    diverging = get_cmap("diverging")
    np.testing.assert_array_equal(rgba[0, 1], _to_uint8(diverging(0.5)))
    np.testing.assert_array_equal(rgba[0, 2], _to_uint8(diverging(1.0)))


def test_constant_and_all_zero_maps_are_drawn_without_nan() -> None:
    rgba = apply_colormap(np.zeros((3, 3)))
    assert np.all(rgba[..., 3] == 255)
    np.testing.assert_array_equal(rgba[1, 1], _to_uint8(mpl.colormaps["viridis"](0.0)))


def test_nan_is_transparent() -> None:
    values = np.array([[np.nan, 1.0], [0.0, np.nan]])
    rgba = apply_colormap(values)
    np.testing.assert_array_equal(rgba[..., 3], [[0, 255], [255, 0]])


def test_accepts_torch_with_grad_and_batch_axes() -> None:
    values = torch.linspace(0, 1, 12, requires_grad=True).reshape(1, 1, 3, 4) * 2
    got = apply_colormap(values)
    expected = apply_colormap(values.detach().numpy()[0, 0])
    assert got.shape == (3, 4, 4)
    np.testing.assert_array_equal(got, expected)


def test_explicit_cmap_and_names() -> None:
    values = np.linspace(0, 1, 10).reshape(2, 5)
    gray = apply_colormap(values, "gray", clip_percentile=100)
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])  # gray: r == g == b
    assert gray[0, 0, 0] == 0 and gray[-1, -1, 0] == 255
    assert get_cmap(None).name == DEFAULT_CMAP == "viridis"
    assert get_cmap("diverging").name == DIVERGING_CMAP
    assert get_cmap(COLORBLIND_CMAP).name == "cividis"
    for name in ("magma", "inferno", "plasma"):
        assert get_cmap(name).name == name


def test_unknown_cmap_suggests_names() -> None:
    with pytest.raises(BadInputError, match="viridis"):
        apply_colormap(np.ones((2, 2)), "viridiss")


def test_non_2d_map_is_refused() -> None:
    with pytest.raises(BadInputError, match=r"\(3, 4, 4\)"):
        apply_colormap(np.ones((3, 4, 4)))
