"""Overlays: blending arithmetic, NaN regions, resizing, and image conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from convlens.errors import BadInputError
from convlens.render.colormaps import apply_colormap
from convlens.render.overlay import overlay, resize_map, to_uint8_image


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


@pytest.fixture
def heat() -> np.ndarray:
    rng = np.random.default_rng(2)
    return rng.random((24, 32))


def test_alpha_zero_is_the_image(image: np.ndarray, heat: np.ndarray) -> None:
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), image)


def test_alpha_one_without_magnitude_is_the_colormap(image: np.ndarray, heat: np.ndarray) -> None:
    # constant opacity 1: every pixel is the colormap's colour of the map scaled at its 99th percentile
    out = overlay(image, heat, alpha=1.0, alpha_by_magnitude=False)
    np.testing.assert_array_equal(out, apply_colormap(heat, clip_percentile=99.0)[..., :3])
    signed = heat - 0.5
    np.testing.assert_array_equal(
        overlay(image, signed, alpha=1.0, alpha_by_magnitude=False),
        apply_colormap(signed, clip_percentile=99.0)[..., :3],
    )


def test_opacity_scales_with_the_map(image: np.ndarray, heat: np.ndarray) -> None:
    # a = alpha * u, u the map over its 99th percentile (clipped to 1): zero leaves the photo
    heat = heat.copy()
    heat[:4] = 0.0
    out = overlay(image, heat, alpha=0.8).astype(float)
    u = np.clip(heat / np.percentile(heat, 99), 0, 1)[:, :, None]
    expected = np.rint(
        (1 - 0.8 * u) * image + 0.8 * u * apply_colormap(heat, clip_percentile=99.0)[..., :3]
    )
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out[:4], image[:4])


def test_signed_maps_fade_where_they_are_near_zero(image: np.ndarray, heat: np.ndarray) -> None:
    signed = heat - 0.5
    out = overlay(image, signed, alpha=1.0).astype(float)
    weight = np.clip(np.abs(signed) / np.percentile(np.abs(signed), 99), 0, 1)[:, :, None]
    expected = np.rint(
        (1 - weight) * image + weight * apply_colormap(signed, clip_percentile=99.0)[..., :3]
    )
    np.testing.assert_array_equal(out, expected)


def test_blend_is_the_convex_combination(image: np.ndarray, heat: np.ndarray) -> None:
    colour = apply_colormap(heat, clip_percentile=99.0)[..., :3].astype(float)
    expected = np.rint(0.3 * colour + 0.7 * image)
    np.testing.assert_array_equal(
        overlay(image, heat, alpha=0.3, alpha_by_magnitude=False), expected
    )


def test_nan_region_leaves_image_unchanged(image: np.ndarray, heat: np.ndarray) -> None:
    heat = heat.copy()
    heat[:10] = np.nan
    out = overlay(image, heat, alpha=0.8)
    np.testing.assert_array_equal(out[:10], image[:10])
    assert np.abs(out[10:].astype(int) - image[10:]).mean() > 10  # the rest is coloured


def test_nan_region_survives_resizing(image: np.ndarray) -> None:
    # A map that covers only the right half of the picture (like a centre crop's map).
    heat = np.full((6, 8), np.nan)
    heat[:, 4:] = np.linspace(0, 1, 24).reshape(6, 4)
    out = overlay(image, heat, alpha=0.8)
    np.testing.assert_array_equal(out[:, :14], image[:, :14])
    assert np.abs(out[:, 18:].astype(int) - image[:, 18:]).mean() > 10


def test_small_heatmap_is_resized_hot_half_stays_left() -> None:
    gray = np.full((64, 64, 3), 128, np.uint8)
    heat = np.zeros((7, 7))
    heat[:, :3] = 1.0  # hot left part
    out = overlay(gray, heat, alpha=0.7).astype(int)
    assert out.shape == (64, 64, 3)
    left, right = out[:, :20], out[:, 44:]
    # viridis: hot = yellow (high red and green), cold = purple (low green, more blue).
    assert left[..., 0].mean() > right[..., 0].mean() + 50
    assert left[..., 1].mean() > right[..., 1].mean() + 50
    assert right[..., 2].mean() > left[..., 2].mean()


def test_resize_map_matches_torch_bilinear_when_upsampling() -> None:
    # torch's bilinear (align_corners=False) is an independent implementation of the same
    # pixel-centre convention that PIL uses for upsampling.
    rng = np.random.default_rng(3)
    values = rng.random((5, 7)).astype(np.float32)
    expected = F.interpolate(
        torch.from_numpy(values)[None, None], size=(15, 21), mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(resize_map(values, (15, 21)), expected[0, 0].numpy(), atol=1e-5)


def test_resize_map_ignores_nan_neighbours() -> None:
    values = np.array([[np.nan, np.nan, 2.0, 2.0]] * 4)
    got = resize_map(values, (8, 8))
    assert np.isnan(got[:, :4]).all()
    # Valid pixels next to the NaN region are not dragged towards 0 by it.
    np.testing.assert_allclose(got[:, 4:], 2.0, rtol=1e-6)


def test_resize_map_same_size_is_identity(heat: np.ndarray) -> None:
    np.testing.assert_allclose(resize_map(heat, heat.shape), heat, rtol=1e-6)


def test_heatmap_as_batched_tensor(image: np.ndarray, heat: np.ndarray) -> None:
    as_tensor = torch.from_numpy(heat)[None, None].requires_grad_()
    np.testing.assert_array_equal(overlay(image, as_tensor), overlay(image, heat))


def test_to_uint8_image_accepts_the_documented_types(image: np.ndarray) -> None:
    chw = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    for given in (image, Image.fromarray(image), chw, chw[None], image / 255.0):
        got = to_uint8_image(given)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, image)
    for low_precision in (chw.half(), chw.bfloat16()):
        np.testing.assert_allclose(to_uint8_image(low_precision), image, atol=1)
    rgba = np.concatenate([image, np.zeros((*image.shape[:2], 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(to_uint8_image(rgba), image)


def test_to_uint8_image_replicates_grayscale(image: np.ndarray) -> None:
    gray = image[..., 0]
    expected = np.repeat(gray[..., None], 3, axis=2)
    np.testing.assert_array_equal(to_uint8_image(gray), expected)
    np.testing.assert_array_equal(
        to_uint8_image(torch.from_numpy(gray)[None].float() / 255), expected
    )
    np.testing.assert_array_equal(to_uint8_image(Image.fromarray(gray)), expected)


def test_to_uint8_image_refuses_input_space_tensors() -> None:
    normalised = torch.full((3, 4, 4), -0.9)  # (uint8 - 127) / 128, not pixel space
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        to_uint8_image(normalised)
    with pytest.raises(BadInputError, match="channels first"):
        to_uint8_image(torch.zeros(4, 5, 5))


def test_bad_alpha_is_refused(image: np.ndarray, heat: np.ndarray) -> None:
    with pytest.raises(BadInputError, match="alpha"):
        overlay(image, heat, alpha=1.5)
