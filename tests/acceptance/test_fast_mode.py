"""Acceptance of issue 20, fast mode on EfficientNet-Lite0 (pytest -m acceptance).

Maps under ``fast=True`` stay within a stated tolerance of eager maps on the real model (the
reference: the same model loaded without ``fast``, same photos, same seeds), and the
forward-only path really runs the folded copy (49 convolution/batch-norm pairs) with the
same predictions.
"""

from __future__ import annotations

import pytest
import torch

import convlens

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(1800)]

#: max |fast - eager| <= RTOL * max |eager|: float32 reordering in channels-last kernels
#: across 50+ layers; measured on the cat and coffee: logits ~1e-6, saliency, guided
#: backprop and Grad-CAM below 1e-4, LRP 1.3e-4, integrated gradients (8 steps) 4.2e-4
RTOL = 1e-3

PHOTOS = ["sample:cat", "sample:coffee"]
METHODS: dict[str, dict[str, object]] = {
    "saliency": {},
    "guided_backprop": {},
    "gradcam": {},
    "integrated_gradients": {"n_steps": 8},
    "lrp": {},
}


@pytest.fixture(scope="module")
def models() -> tuple[convlens.Model, convlens.Model]:
    return convlens.load_model("efficientnet_lite0"), convlens.load_model(
        "efficientnet_lite0", fast=True
    )


def test_fast_mode_records_what_it_uses(models) -> None:  # type: ignore[no-untyped-def]
    _, fast = models
    assert fast.fast == {
        "channels_last": True,
        "fold_batchnorm": 49,  # stem, 16 blocks x 2 or 3 pairs, head
        "fold_batchnorm_scope": "forward-only calls (logits, features)",
        "bfloat16": False,
        "compile": False,
        "fallbacks": [],
    }


def test_predictions_match(models) -> None:  # type: ignore[no-untyped-def]
    eager, fast = models
    batch = eager.prepare(PHOTOS)
    want, got = eager.logits(batch.x), fast.logits(batch.x)
    assert float((got - want).abs().max() / want.abs().max()) <= RTOL
    assert torch.equal(got.argmax(1), want.argmax(1))
    with torch.no_grad():
        assert fast.forward_module() is not fast.module  # the folded copy served logits


@pytest.mark.parametrize("method", sorted(METHODS))
def test_maps_match_eager(models, method: str) -> None:  # type: ignore[no-untyped-def]
    eager, fast = models
    want = convlens.explain(eager, PHOTOS, method, **METHODS[method])
    got = convlens.explain(fast, PHOTOS, method, **METHODS[method])
    gap = float(
        (got["attribution"] - want["attribution"]).abs().max() / want["attribution"].abs().max()
    )
    print(f"{method}: fast vs eager relative max difference {gap:.1e}")
    assert gap <= RTOL
    assert got.provenance["fast"]["channels_last"] is True
