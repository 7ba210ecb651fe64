"""Preprocessing: TF-Lite normalisation, crop geometry, round trip, differentiability."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convlens.models.preprocess import Preprocessing, map_to_original

LITE = Preprocessing((224, 224), 256, (127 / 255,) * 3, (128 / 255,) * 3)


def test_tflite_normalisation_is_uint8_minus_127_over_128() -> None:
    levels = torch.arange(256, dtype=torch.float64)
    pixels = (levels / 255).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    x = Preprocessing((16, 16), None, (127 / 255,) * 3, (128 / 255,) * 3).normalize(pixels)
    torch.testing.assert_close(x[0, 0].flatten(), (levels - 127) / 128)


def test_geometry_of_resize_and_centre_crop() -> None:
    g = LITE.geometry(300, 451)  # the cat photo
    scale = 256 / 300
    rw = round(451 * scale)  # 385
    assert g.original_size == (300, 451)
    assert g.top == pytest.approx(((256 - 224) // 2) / scale, rel=1e-3)
    assert g.left == pytest.approx(((rw - 224) // 2) * 451 / rw)
    assert g.height == pytest.approx(224 / scale, rel=1e-3)


def test_crop_content_matches_geometry() -> None:
    # A bright square placed in the original must land where the geometry says.
    img = torch.zeros(3, 400, 600)
    img[:, 180:220, 280:320] = 1.0  # centre of the original
    pixels, g = LITE.to_pixels(img)
    assert pixels.shape == (3, 224, 224)
    ys, xs = torch.nonzero(pixels[0] > 0.5, as_tuple=True)
    cy, cx = ys.float().mean().item(), xs.float().mean().item()
    # back to original coordinates through the geometry
    oy = g.top + (cy + 0.5) * g.height / 224 - 0.5
    ox = g.left + (cx + 0.5) * g.width / 224 - 0.5
    assert oy == pytest.approx(199.5, abs=1.0)
    assert ox == pytest.approx(299.5, abs=1.0)


def test_round_trip_image_at_input_size_is_untouched() -> None:
    img = torch.rand(3, 224, 224)
    pixels, g = LITE.to_pixels(img)
    assert g.identity
    assert torch.equal(pixels, img)


def test_preprocessing_is_differentiable() -> None:
    img = torch.rand(3, 100, 150, requires_grad=True)
    pixels, _ = LITE.to_pixels(img)
    LITE.normalize(pixels).sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0


def test_map_to_original_places_crop_and_nan_outside() -> None:
    g = LITE.geometry(300, 451)
    full = map_to_original(torch.ones(7, 7), g)
    assert full.shape == (300, 451)
    inside = ~torch.isnan(full)
    cols = torch.nonzero(inside.any(0)).flatten()
    assert cols.min().item() == round(g.left)
    assert np.isclose(cols.max().item() + 1, round(g.left + g.width), atol=1)
    assert torch.all(full[inside] == 1)
