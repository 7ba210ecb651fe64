"""Occlusion on the built-in EfficientNet-Lite0 (pytest -m acceptance).

The incremental engine (crops of the early layers, dense tail) must give the brute-force
map (every occluded image through the whole model) to rtol 1e-4 at the benchmark's setting
(patch 16, stride 8: 729 windows) and at a setting whose last windows are cut off at the
border, and the brute force must equal Captum's ``Occlusion``.
"""

from __future__ import annotations

import pytest
import torch

from convlens.attribution import occlusion as occlusion_module
from convlens.attribution.occlusion import occlusion, window_starts
from convlens.hooks import inference_context

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def cat(lite0):  # type: ignore[no-untyped-def]
    x = lite0.prepare(["sample:cat"]).x
    return x, int(lite0.logits(x).argmax())


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    # atol: drops far from the cat are differences of nearly equal logits (float32 noise)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parametrize(
    ("patch", "stride", "fill", "output"),
    [(16, 8, "zero", "score"), (30, 16, "mean", "probability")],
)
def test_incremental_equals_brute_force(
    lite0, cat, patch: int, stride: int, fill: str, output: str
) -> None:  # type: ignore[no-untyped-def]
    x, cls = cat
    fast = occlusion(lite0, x, cls, patch=patch, stride=stride, fill=fill, output=output)
    brute = occlusion(
        lite0, x, cls, patch=patch, stride=stride, fill=fill, output=output, incremental=False
    )
    _close(fast, brute)
    assert float(brute.abs().max()) > (0.01 if output == "probability" else 0.5)  # not a flat map


def test_the_engine_crops_the_early_layers_of_lite0(lite0, cat) -> None:  # type: ignore[no-untyped-def]
    x, _ = cat
    engine = occlusion_module._trace(lite0.module)
    assert engine is not None
    starts = window_starts(224, 16, 8)
    boxes = occlusion_module._window_boxes(starts, starts, (16, 16), x.device)[300:364]
    fill = occlusion_module._fill_image(lite0, x, "zero", 16)
    with inference_context(lite0.module), torch.no_grad():
        clean = engine.run_clean(x)
        engine.run_windows(clean, occlusion_module._input_patch(x, fill, boxes, (16, 16)))
    for name in (
        "stem_conv",
        "blocks_1_depthwise_conv",
        "blocks_3_depthwise_conv",
        "blocks_4_depthwise_conv",
        "add_1",
        "blocks_5_depthwise_conv",
    ):
        assert name in engine.patched, name
    assert "head_conv" not in engine.patched


@pytest.mark.captum
def test_brute_force_equals_captum_on_lite0(lite0, cat) -> None:  # type: ignore[no-untyped-def]
    captum_attr = pytest.importorskip("captum.attr")
    x, cls = cat
    baseline = lite0.normalize(torch.zeros(1, 3, 1, 1))
    with inference_context(lite0.module):
        ref = captum_attr.Occlusion(lite0.module).attribute(
            x,
            sliding_window_shapes=(3, 30, 30),
            strides=(3, 16, 16),
            baselines=baseline,
            target=cls,
            perturbations_per_eval=32,
        )
    _close(occlusion(lite0, x, cls, patch=30, stride=16, incremental=False), ref)
    _close(occlusion(lite0, x, cls, patch=30, stride=16), ref)
