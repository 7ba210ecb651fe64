"""Acceptance of issue 7 (style by optimisation) on EfficientNet-Lite0, measured on
efficientnet_lite1, a network the optimisation never saw (pytest -m acceptance).

- Style transfer with the default settings (256 px) on cat/coffee x brick/grass/gravel: the
  stylised image's Lite1 Gram distance to the style is <= 0.6x the content image's, with a
  content-feature correlation (Lite1, its stride-16 layer) >= 0.45.
- Texture synthesis with the defaults (a 384 px texture from a 256 px sample): the Lite1
  Gram distance to the sample is <= 0.5x the starting noise's, and the texture is not a
  copy (largest normalised cross-correlation of 32 px patches with the sample < 0.9).

Measures: :mod:`convlens.style.measure` (plain Gram matrices, four layers at strides 2-16).
"""

from __future__ import annotations

import pytest
import torch

import convlens
from convlens.data.images import quantize_8bit
from convlens.style import style_transfer, synthesize_texture
from convlens.style.measure import content_correlation, gram_distance, max_patch_correlation
from convlens.style.transfer import load_style_image

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def lite1() -> convlens.Model:
    return convlens.load_model("efficientnet_lite1")


@pytest.mark.parametrize("content", ["cat", "coffee"])
@pytest.mark.parametrize("style", ["brick", "grass", "gravel"])
def test_style_transfer_takes_the_style_and_keeps_the_content_on_lite1(
    lite0: convlens.Model, lite1: convlens.Model, content: str, style: str
) -> None:
    torch.manual_seed(0)
    result = style_transfer(lite0, f"sample:{content}", f"sample:{style}", size=256)
    stylised, original = quantize_8bit(result["image"]), result["content"]
    style_pixels = load_style_image(f"sample:{style}", 256)
    ratio = float(
        gram_distance(lite1, stylised, style_pixels)[0]
        / gram_distance(lite1, original, style_pixels)[0]
    )
    correlation = float(content_correlation(lite1, stylised, original)[0])
    print(
        f"\n{content} x {style}: Lite1 Gram distance ratio {ratio:.2f}, content correlation {correlation:.2f}, {result.provenance['params']['seconds']:.0f} s"
    )
    assert ratio <= 0.6
    assert correlation >= 0.45


@pytest.mark.parametrize("sample", ["brick", "grass", "gravel"])
def test_texture_matches_the_sample_on_lite1_without_copying_it(
    lite0: convlens.Model, lite1: convlens.Model, sample: str
) -> None:
    result = synthesize_texture(lite0, f"sample:{sample}")
    texture, source = quantize_8bit(result["image"]), result["sample"]
    assert texture.shape[-1] > source.shape[-1]  # larger than the sample
    ratio = float(
        gram_distance(lite1, texture, source)[0] / gram_distance(lite1, result["start"], source)[0]
    )
    ncc = max_patch_correlation(texture, source, patch=32)
    print(
        f"\n{sample}: Lite1 Gram distance {ratio:.2f}x the starting noise's, max patch NCC {ncc:.2f}, {result.provenance['params']['seconds']:.0f} s"
    )
    assert ratio <= 0.5
    assert ncc < 0.9
