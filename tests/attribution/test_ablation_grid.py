"""Feature ablation on a regular grid of windows runs through incremental occlusion.

The routed result must equal the plain one-superpixel-at-a-time path (forced with
``incremental=False``) and Captum's ``FeatureAblation`` with the same mask and baseline,
on a plain and on a residual tiny net; masks that are not such a grid stay on the plain path.
"""

from __future__ import annotations

import pytest
import torch

from convlens.attribution import perturbation
from convlens.attribution.perturbation import _grid_patch, superpixel_ablation

from helpers.tiny import tiny_model


def _grid(ph: int, pw: int, size: int = 16) -> torch.Tensor:
    """Window labels written out by hand: row-major windows of ph x pw pixels."""
    labels = torch.empty(size, size, dtype=torch.long)
    cols = (size + pw - 1) // pw
    for i in range(size):
        for j in range(size):
            labels[i, j] = (i // ph) * cols + j // pw
    return labels


def _x(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Records the (patch, stride) of every occlusion call made by superpixel_ablation."""
    calls: list[tuple] = []
    real = perturbation.occlusion

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((kwargs["patch"], kwargs["stride"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(perturbation, "occlusion", spy)
    return calls


@pytest.mark.parametrize("kind", ["conv", "residual"])
@pytest.mark.parametrize(("ph", "pw"), [(4, 4), (4, 8), (5, 5)])
@pytest.mark.parametrize("fill", ["mean", "zero", 0.3])
def test_grid_ablation_equals_plain_path(
    kind: str, ph: int, pw: int, fill: str | float, routed: list[tuple]
) -> None:
    model, x, labels = tiny_model(kind), _x(), _grid(ph, pw)
    fast = superpixel_ablation(model, x, 2, segments=labels, fill=fill, batch_size=7)
    assert routed == [((ph, pw), (ph, pw))]
    plain = superpixel_ablation(
        model, x, 2, segments=labels, fill=fill, batch_size=7, incremental=False
    )
    assert len(routed) == 1  # the forced path did not go through occlusion
    assert fast.shape == plain.shape == x.shape
    assert torch.allclose(fast, plain, atol=1e-5)
    assert plain.abs().max() > 1e-3  # not a trivial all-zero comparison


@pytest.mark.captum
@pytest.mark.parametrize("kind", ["conv", "residual"])
def test_grid_ablation_equals_captum_feature_ablation(kind: str, routed: list[tuple]) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    model, x = tiny_model(kind), _x()
    labels = _grid(4, 8)
    # the image's mean colour, in input space, as the baseline of the hidden windows
    baseline = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    with torch.no_grad():
        predicted = model.module(x).argmax(dim=1)
    ref = captum_attr.FeatureAblation(model.module).attribute(
        x, baselines=baseline, target=predicted, feature_mask=labels.expand(2, 1, 16, 16)
    )
    got = superpixel_ablation(model, x, None, segments=labels, fill="mean")
    assert routed  # went through occlusion
    assert torch.allclose(got, ref, atol=1e-5)


def test_grid_ablation_blur_routes_only_with_occlusions_sigma(routed: list[tuple]) -> None:
    model, x, labels = tiny_model("residual"), _x(1), _grid(4, 4)
    same = superpixel_ablation(model, x, 1, segments=labels, fill="blur", blur_sigma=2.0)
    assert len(routed) == 1
    plain = superpixel_ablation(
        model, x, 1, segments=labels, fill="blur", blur_sigma=2.0, incremental=False
    )
    assert torch.allclose(same, plain, atol=1e-5)
    other = superpixel_ablation(model, x, 1, segments=labels, fill="blur", blur_sigma=3.0)
    assert len(routed) == 1  # sigma 3 is not occlusion's blur: plain path
    assert not torch.allclose(other, same, atol=1e-4)


def test_detection_of_grids() -> None:
    grid = _grid(4, 8)
    assert _grid_patch(grid[None]) == (4, 8)
    assert _grid_patch(_grid(5, 3)[None]) == (5, 3)  # last row and column cut by the border
    # any numbering of the same windows is the same grid
    shuffled = torch.randperm(int(grid.max()) + 1, generator=torch.Generator().manual_seed(0))[grid]
    relabelled = torch.unique(shuffled, return_inverse=True)[1]
    assert _grid_patch(relabelled[None]) == (4, 8)
    # not grids: uneven rectangles, two windows merged, images with different grids
    uneven = (torch.arange(16) * 3 // 16)[:, None] * 3 + (torch.arange(16) * 3 // 16)[None, :]
    assert _grid_patch(uneven[None]) is None
    merged = grid.clone()
    merged[merged == 1] = 0
    assert _grid_patch(torch.unique(merged, return_inverse=True)[1][None]) is None
    assert _grid_patch(torch.stack([grid, _grid(4, 4)])) is None


def test_non_grid_masks_stay_on_the_plain_path(routed: list[tuple]) -> None:
    model, x = tiny_model("conv"), _x(1)
    uneven = (torch.arange(16) * 3 // 16)[:, None] * 3 + (torch.arange(16) * 3 // 16)[None, :]
    superpixel_ablation(model, x, 1, segments=uneven, fill="zero")
    assert routed == []
