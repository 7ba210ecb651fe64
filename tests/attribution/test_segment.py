"""Segmentation for free (Simonyan et al. 2014, Sec. 3.1): saliency-seeded GrabCut masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import convlens
from convlens.attribution import explain
from convlens.attribution.segment import GC_BGD, GC_FGD, GC_PR_BGD, grabcut_seeds, segment
from convlens.errors import BadInputError

SIZE = 40
OBJECT = (slice(10, 28), slice(12, 32))  # 18 x 20 of 40 x 40: 22.5 % of the image


class ObjectDetector(nn.Module):
    """logit_0 = <W, x> with W non-zero only on the object: its gradient is the object."""

    def __init__(self) -> None:
        super().__init__()
        w = torch.zeros(1, 3, SIZE, SIZE)
        w[:, :, OBJECT[0], OBJECT[1]] = 1.0 + torch.rand(
            1, 3, 18, 20, generator=torch.Generator().manual_seed(0)
        )
        self.w = nn.Parameter(w, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * self.w).flatten(1).sum(1)
        return torch.stack([score, -score], dim=1)


def _scene(n: int = 2) -> tuple[convlens.Model, torch.Tensor, torch.Tensor]:
    """A bright object on a plain dark background (pixel space), its model and its mask."""
    model = convlens.wrap(
        ObjectDetector(),
        input_size=SIZE,
        mean=0.5,
        std=0.25,
        resize=None,
        labels=["object", "other"],
    )
    g = torch.Generator().manual_seed(1)
    pixels = 0.15 + 0.05 * torch.rand(n, 3, SIZE, SIZE, generator=g)
    pixels[:, 0, OBJECT[0], OBJECT[1]] = 0.85 + 0.1 * torch.rand(n, 18, 20, generator=g)
    pixels[:, 1, OBJECT[0], OBJECT[1]] = 0.7
    truth = torch.zeros(n, SIZE, SIZE)
    truth[:, OBJECT[0], OBJECT[1]] = 1.0
    return model, model.normalize(pixels), truth


def _iou(mask: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    inter = (mask.bool() & truth.bool()).flatten(1).sum(1)
    union = (mask.bool() | truth.bool()).flatten(1).sum(1)
    return inter / union


def _peaked_saliency(truth: torch.Tensor) -> torch.Tensor:
    """High on the object (peaking at its centre), low noise elsewhere."""
    g = torch.Generator().manual_seed(2)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    bump = torch.exp(-((yy - 19) ** 2 + (xx - 22) ** 2) / (2 * 6.0**2))
    return truth * (0.5 + bump) + 0.2 * torch.rand(truth.shape, generator=g)


def test_a_bright_object_is_segmented_from_a_peaked_saliency_map() -> None:
    model, x, truth = _scene()
    mask = segment(model, x, 0, saliency=_peaked_saliency(truth))
    assert mask.shape == (2, 1, SIZE, SIZE) and mask.dtype == x.dtype
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    iou = _iou(mask[:, 0], truth)
    assert (iou > 0.8).all(), iou
    # the seeds alone (top 5 % of the map) cover only a fraction of the object: GrabCut grew them
    seeds = torch.from_numpy(grabcut_seeds(_peaked_saliency(truth)[0].numpy()))
    assert float(_iou((seeds == GC_FGD)[None], truth[:1])) < 0.3


def test_reversed_quantiles_would_segment_the_background() -> None:
    model, x, truth = _scene()
    # a wrong implementation seeding the foreground from the lowest saliency
    mask = segment(model, x, 0, saliency=-_peaked_saliency(truth))
    assert (_iou(mask[:, 0], truth) < 0.2).all()


def test_default_saliency_is_the_class_gradient() -> None:
    model, x, truth = _scene()
    mask = segment(model, x, 0)
    assert (_iou(mask[:, 0], truth) > 0.8).all()
    result = explain(model, model.denormalize(x), "segment", target=0)
    assert result.tensors["map"].shape == (2, SIZE, SIZE)
    torch.testing.assert_close(result.tensors["attribution"], mask)


def test_seeds_follow_the_quantiles() -> None:
    s = np.arange(100, dtype=float).reshape(10, 10)
    seeds = grabcut_seeds(s, 0.95, 0.3)
    assert (
        (seeds == GC_FGD).sum() == 5
        and (seeds == GC_BGD).sum() == 30
        and (seeds == GC_PR_BGD).sum() == 65
    )
    assert seeds.flat[99] == GC_FGD and seeds.flat[0] == GC_BGD
    sparse = np.zeros((10, 10))
    sparse[2:4, 2:4] = 1.0  # 4 % non-zero: ties at the 95 % quantile go to the foreground
    assert (grabcut_seeds(sparse) == GC_FGD).sum() == 4
    assert (grabcut_seeds(np.ones((10, 10))) == GC_FGD).sum() == 0


def test_flat_saliency_gives_an_empty_mask_and_results_are_deterministic() -> None:
    model, x, truth = _scene()
    assert segment(model, x, 0, saliency=torch.ones(2, SIZE, SIZE)).sum() == 0
    noisy = _peaked_saliency(truth) + 0.5 * torch.rand(
        2, SIZE, SIZE, generator=torch.Generator().manual_seed(3)
    )
    a = segment(model, x, 0, saliency=noisy, iterations=3)
    b = segment(model, x, 0, saliency=noisy, iterations=3)
    alone = torch.cat(
        [segment(model, x[i : i + 1], 0, saliency=noisy[i : i + 1], iterations=3) for i in range(2)]
    )
    assert torch.equal(a, b) and torch.equal(a, alone)


def test_largest_component_drops_a_distant_island() -> None:
    model, x, truth = _scene(1)
    pixels = model.denormalize(x)
    pixels[:, :, 2:6, 2:6] = pixels[
        :, :, 15:19, 20:24
    ]  # a small copy of the object's colour in a corner
    x2 = model.normalize(pixels)
    saliency = _peaked_saliency(truth)
    saliency[:, 2:6, 2:6] = 1.4  # and salient
    kept = segment(model, x2, 0, saliency=saliency)
    everything = segment(model, x2, 0, saliency=saliency, largest_component=False)
    assert everything[0, 0, 2:6, 2:6].all() and not kept[0, 0, 2:6, 2:6].any()
    assert float(_iou(kept[:, 0], truth)) > 0.8


def test_bad_options() -> None:
    model, x, _ = _scene(1)
    with pytest.raises(BadInputError, match="bg_quantile < fg_quantile"):
        segment(model, x, 0, fg_quantile=0.2, bg_quantile=0.3)
    with pytest.raises(BadInputError, match="saliency has shape"):
        segment(model, x, 0, saliency=torch.zeros(1, 8, 8))
