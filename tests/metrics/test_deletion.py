"""Deletion / insertion AUC (Petsiuk et al. 2018) against hand-built models and hand sums."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

import convlens
from convlens.errors import BadInputError, TargetError
from convlens.metrics import deletion_auc, insertion_auc
from convlens.metrics.deletion import fill_image, pixel_ranks
from convlens.targets import Neuron


class LinearLogit(nn.Module):
    """Two classes: logit_0 = <w, x> (over all pixels and channels), logit_1 = 0."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * self.w).flatten(1).sum(dim=1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


class RegionDetector(nn.Module):
    """Class 0 is decided by the mean brightness of one fixed region only."""

    def __init__(self, region: tuple[slice, slice]) -> None:
        super().__init__()
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x[:, :, self.region[0], self.region[1]].mean(dim=(1, 2, 3))
        return torch.stack([12 * mean - 6, torch.zeros_like(mean)], dim=1)


def _wrap(module: nn.Module, size: int, channels: int) -> convlens.Model:
    # mean 0 / std 1: input space = pixel space, so "zero" fill is exactly 0
    return convlens.wrap(
        module,
        input_size=size,
        mean=0.0,
        std=1.0,
        channels=channels,
        resize=None,
        labels=["a", "b"],
        name="hand",
    )


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_auc_of_a_known_curve_by_hand() -> None:
    # 1 channel, 2x2 pixels, logit = 1*x00 + 2*x01 + 3*x10 + 4*x11 on an all-ones image
    w = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    model = _wrap(LinearLogit(w), 2, 1)
    x = torch.ones(1, 1, 2, 2)
    auc, curve = deletion_auc(model, x, w[:, 0], 0, steps=4, fill="zero")
    # pixels leave in the order 4, 3, 2, 1: logits 10, 6, 3, 1, 0
    expected = [_sigmoid(v) for v in (10, 6, 3, 1, 0)]
    torch.testing.assert_close(curve[0], torch.tensor(expected), atol=1e-6, rtol=0)
    by_hand = sum(0.25 * (a + b) / 2 for a, b in itertools.pairwise(expected))
    assert auc.item() == pytest.approx(by_hand, abs=1e-6)
    # two pixels per step: logits 10, 3, 0
    auc2, curve2 = deletion_auc(model, x, w[:, 0], 0, steps=2, fill="zero")
    torch.testing.assert_close(
        curve2[0], torch.tensor([_sigmoid(10), _sigmoid(3), _sigmoid(0)]), atol=1e-6, rtol=0
    )
    assert auc2.item() == pytest.approx(
        0.5 * (_sigmoid(10) + 2 * _sigmoid(3) + _sigmoid(0)) / 2, abs=1e-6
    )
    # insertion reveals the same order into the zero image: logits 0, 4, 7, 9, 10
    _, icurve = insertion_auc(model, x, w[:, 0], 0, steps=4, fill="zero")
    torch.testing.assert_close(
        icurve[0], torch.tensor([_sigmoid(v) for v in (0, 4, 7, 9, 10)]), atol=1e-6, rtol=0
    )


def test_uneven_steps_use_the_true_fraction_of_pixels() -> None:
    # 3 pixels in 2 steps: round(1.5) = 2 pixels after step 1, x-axis 0, 2/3, 1
    w = torch.tensor([[[[3.0, 2.0, 1.0]]]])
    model = convlens.wrap(
        LinearLogit(w),
        input_size=(1, 3),
        mean=0.0,
        std=1.0,
        channels=1,
        resize=None,
        labels=["a", "b"],
    )
    auc, curve = deletion_auc(model, torch.ones(1, 1, 1, 3), w[:, 0], 0, steps=2, fill="zero")
    values = [_sigmoid(6), _sigmoid(1), _sigmoid(0)]
    torch.testing.assert_close(curve[0], torch.tensor(values), atol=1e-6, rtol=0)
    assert auc.item() == pytest.approx(
        (2 / 3) * (values[0] + values[1]) / 2 + (1 / 3) * (values[1] + values[2]) / 2, abs=1e-6
    )


REGION = (slice(4, 8), slice(9, 13))


def _region_case(n: int = 3) -> tuple[convlens.Model, torch.Tensor, torch.Tensor]:
    """A bright deciding patch on a dark image, and a map ranking the patch first."""
    model = _wrap(RegionDetector(REGION), 16, 3)
    g = torch.Generator().manual_seed(0)
    x = 0.1 + 0.2 * torch.rand(n, 3, 16, 16, generator=g)
    x[:, :, REGION[0], REGION[1]] += 0.7
    good = 0.1 * torch.rand(n, 16, 16, generator=g)
    good[:, REGION[0], REGION[1]] += 1.0
    return model, x, good


@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_a_map_on_the_deciding_region_beats_its_reverse(fill: str) -> None:
    model, x, good = _region_case()
    options = {"steps": 32, "fill": fill, "blur_sigma": 3.0}
    d_good, _ = deletion_auc(model, x, good, 0, **options)
    d_bad, _ = deletion_auc(model, x, -good, 0, **options)
    assert (d_good < 0.2).all() and (d_bad > 0.8).all(), (d_good, d_bad)
    i_good, _ = insertion_auc(model, x, good, 0, **options)
    i_bad, _ = insertion_auc(model, x, -good, 0, **options)
    assert (i_good > 0.8).all() and (i_bad < 0.2).all(), (i_good, i_bad)


@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_curve_ends_are_the_clean_and_the_filled_image(fill: str) -> None:
    model, x, good = _region_case()
    filled = fill_image(model, x, fill)
    p_clean = model.logits(x).softmax(1)[:, 0]
    p_filled = model.logits(filled).softmax(1)[:, 0]
    _, dcurve = deletion_auc(model, x, good, 0, steps=8, fill=fill)
    _, icurve = insertion_auc(model, x, good, 0, steps=8, fill=fill)
    torch.testing.assert_close(dcurve[:, 0], p_clean, atol=1e-6, rtol=0)
    torch.testing.assert_close(dcurve[:, -1], p_filled, atol=1e-6, rtol=0)
    torch.testing.assert_close(icurve[:, 0], p_filled, atol=1e-6, rtol=0)
    torch.testing.assert_close(icurve[:, -1], p_clean, atol=1e-6, rtol=0)


def test_fills() -> None:
    model = convlens.wrap(
        nn.Identity(), input_size=4, mean=[0.2, 0.4, 0.6], std=[0.5, 0.5, 0.5], resize=None
    )
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    zero = fill_image(model, x, "zero")
    torch.testing.assert_close(
        model.denormalize(zero), torch.zeros_like(x), atol=1e-6, rtol=0
    )  # black pixels
    mean = fill_image(model, x, "mean")
    torch.testing.assert_close(mean[:, :, 2, 3], x.mean(dim=(2, 3)))
    with pytest.raises(BadInputError, match="fill='grey'"):
        fill_image(model, x, "grey")
    custom = torch.full_like(x, 0.3)
    assert torch.equal(fill_image(model, x, custom), custom)


def test_gaussian_blur_matches_scipy() -> None:
    img = torch.rand(1, 2, 16, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    # the deletion fill's blur (the model's normalisation is the identity: mean 0, std 1)
    ours = fill_image(_wrap(nn.Identity(), 16, 2), img, "blur", blur_sigma=1.5)
    # torch's reflect padding (edge not repeated) is scipy's "mirror"; radius ceil(3 sigma) = 5 = truncate 3
    ref = np.stack([gaussian_filter(c, 1.5, mode="mirror", truncate=3.0) for c in img[0].numpy()])
    np.testing.assert_allclose(ours[0].numpy(), ref, atol=1e-10)


def test_ties_are_broken_in_raster_order() -> None:
    ranks = pixel_ranks(torch.tensor([[[1.0, 1.0], [2.0, 0.0]]]))
    assert ranks.tolist() == [[1, 2, 0, 3]]
    assert pixel_ranks(torch.zeros(1, 3, 3)).tolist() == [list(range(9))]


def test_batching_and_chunks_do_not_change_the_result() -> None:
    model, x, good = _region_case(4)
    calls: list[tuple[int, int]] = []
    _, curve = deletion_auc(
        model,
        x,
        good,
        0,
        steps=10,
        fill="blur",
        batch_size=7,
        progress=lambda d, t: calls.append((d, t)),
    )
    _, curve_big = deletion_auc(model, x, good, 0, steps=10, fill="blur", batch_size=1000)
    alone = torch.cat(
        [
            deletion_auc(model, x[i : i + 1], good[i : i + 1], 0, steps=10, fill="blur")[1]
            for i in range(4)
        ]
    )
    torch.testing.assert_close(curve, curve_big)
    torch.testing.assert_close(curve, alone)
    assert calls[-1] == (44, 44) and len(calls) == 7


def test_default_target_is_the_predicted_class_and_maps_may_have_a_channel() -> None:
    model, x, good = _region_case()
    predicted = model.logits(x).argmax(1)
    a, _ = deletion_auc(model, x, good[:, None], None, steps=4)
    b, _ = deletion_auc(model, x, good, predicted, steps=4)
    torch.testing.assert_close(a, b)


def test_bad_inputs_are_refused() -> None:
    model, x, good = _region_case()
    with pytest.raises(BadInputError, match=r"maps have shape \(3, 8, 8\)"):
        deletion_auc(model, x, good[:, :8, :8], 0)
    with pytest.raises(BadInputError, match="NaN"):
        deletion_auc(model, x, good * float("nan"), 0)
    with pytest.raises(BadInputError, match="steps=0"):
        deletion_auc(model, x, good, 0, steps=0)
    with pytest.raises(TargetError, match="class target"):
        insertion_auc(model, x, good, lambda out: out[:, 0])
    with pytest.raises(BadInputError, match="no layer named 'nope'"):
        deletion_auc(model, x, good, Neuron("nope", 0))
