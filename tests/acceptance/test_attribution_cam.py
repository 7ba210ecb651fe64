"""Acceptance checks of issue 4 for the CAM family, on EfficientNet-Lite0 and the bundled photos."""

from __future__ import annotations

import pytest
import torch

import convlens
from convlens.attribution import default_cam_layer
from convlens.attribution.cam import (
    eigencam,
    gradcam,
    gradcam_pp,
    guided_gradcam,
    layercam,
    scorecam,
)
from convlens.data.samples import sample_names

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def photos(lite0: convlens.Model) -> tuple[torch.Tensor, torch.Tensor]:
    batch = lite0.prepare([f"sample:{name}" for name in sample_names(labelled_only=True)])
    return batch.x, lite0.logits(batch.x).argmax(dim=1)


@pytest.mark.captum
def test_gradcam_equals_captum_on_head_act(lite0: convlens.Model) -> None:
    from captum.attr import LayerAttribution, LayerGradCam

    assert default_cam_layer(lite0) == "head_act"
    x = lite0.prepare(["sample:cat"]).x
    target = int(lite0.logits(x).argmax())
    ref = LayerGradCam(lite0.module, lite0.module.head_act).attribute(
        x.clone().requires_grad_(), target=target, relu_attributions=True
    )
    ref = LayerAttribution.interpolate(ref, (224, 224), interpolate_mode="bilinear").detach()
    ours = gradcam(lite0, x, target)  # default layer
    assert ours.shape == (1, 1, 224, 224) and ref.abs().max() > 0
    assert ((ours - ref).abs().max() / ref.abs().max()).item() <= 1e-5


def _assert_not_degenerate(maps: torch.Tensor, name: str, spread: float = 0.05) -> None:
    """Finite, not all zero, not flat (std > ``spread`` x max), and not one map for every photo."""
    assert torch.isfinite(maps).all(), name
    flat = maps.flatten(1).double()
    scale = flat.abs().amax(dim=1)
    assert (scale > 0).all(), f"{name}: an all-zero map"
    assert (flat.std(dim=1) > spread * scale).all(), f"{name}: a flat map"
    centred = flat - flat.mean(dim=1, keepdim=True)
    unit = centred / centred.norm(dim=1, keepdim=True)
    correlation = unit @ unit.T
    off_diagonal = correlation[~torch.eye(len(flat), dtype=torch.bool)]
    assert off_diagonal.max() < 0.99, f"{name}: two photos got the same map"


@pytest.mark.parametrize(
    "method", [gradcam, gradcam_pp, layercam, eigencam, scorecam], ids=lambda m: m.__name__
)
def test_every_cam_runs_on_the_bundled_photos(
    lite0: convlens.Model, photos: tuple[torch.Tensor, torch.Tensor], method
) -> None:  # type: ignore[no-untyped-def]
    x, classes = photos
    if method is scorecam:
        # ~460 masked forward passes per photo at head_act: two photos are enough here
        x, classes = x[:2], classes[:2]
    maps = method(lite0, x, classes)
    assert maps.shape == (len(x), 1, 224, 224)
    assert (maps >= 0).all()
    _assert_not_degenerate(maps, method.__name__)


def test_guided_gradcam_runs_on_the_bundled_photos(
    lite0: convlens.Model, photos: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, classes = photos
    out = guided_gradcam(lite0, x, classes)
    assert out.shape == x.shape
    # pixel-sharp and heavy-tailed: a few edges carry most of the mass, so a lower spread
    _assert_not_degenerate(out.abs().sum(dim=1, keepdim=True), "guided_gradcam", spread=0.01)
