"""The outside-object share (convlens.metrics.bias) against hand-computed values.

- ``outside_share`` on small maps whose sums are done by hand, for non-negative and signed
  maps under both sign rules, with a zero map (NaN) and shape errors;
- ``bias_check`` on a linear model whose saliency is its weight row (known without running
  any attribution code): per-image shares, accuracy, the misclassified ranking and the
  counter-cue split all equal hand values.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import convlens
from convlens.errors import BadInputError
from convlens.metrics.bias import SplitReport, bias_check, outside_share


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """One torch thread (tests/conftest.py)."""


def test_share_of_a_non_negative_map_by_hand() -> None:
    maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [5.0, 5.0]]])
    masks = torch.tensor([[[True, False], [False, False]], [[False, False], [True, False]]])
    # image 0: outside = 2 + 3 + 4 = 9 of 10; image 1: outside = 5 of 10
    got = outside_share(maps, masks)
    assert got.tolist() == pytest.approx([0.9, 0.5], abs=1e-12)
    # the two sign rules agree on non-negative maps, and (N, 1, H, W) is accepted
    assert outside_share(maps[:, None], masks, sign="positive").tolist() == pytest.approx(
        [0.9, 0.5], abs=1e-12
    )


def test_share_of_a_signed_map_by_hand() -> None:
    maps = torch.tensor([[[-1.0, 2.0], [3.0, -4.0]]])
    on_first = torch.tensor([[[True, False], [False, False]]])
    on_second = torch.tensor([[[False, True], [False, False]]])
    # abs: |A| = 1, 2, 3, 4 -> outside (2 + 3 + 4) / 10; positive: max(A, 0) = 0, 2, 3, 0
    assert outside_share(maps, on_first, sign="abs").item() == pytest.approx(0.9, abs=1e-12)
    assert outside_share(maps, on_first, sign="positive").item() == pytest.approx(1.0, abs=1e-12)
    assert outside_share(maps, on_second, sign="positive").item() == pytest.approx(3 / 5, abs=1e-12)
    assert outside_share(maps, on_second, sign="abs").item() == pytest.approx(8 / 10, abs=1e-12)


def test_map_without_mass_has_no_share_and_bad_shapes_are_refused() -> None:
    got = outside_share(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.bool))
    assert math.isnan(got.item())
    with pytest.raises(BadInputError, match="same size"):
        outside_share(torch.ones(2, 3, 3), torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(BadInputError, match="sign"):
        outside_share(torch.ones(1, 3, 3), torch.ones(1, 3, 3), sign="negative")


def _linear_model() -> tuple[convlens.Model, torch.Tensor]:
    """Two classes, logits = W x + b on 3x8x8 input; class 0 always wins (b = 100, 0)."""
    weight = torch.full((2, 3, 8, 8), 0.5)
    weight[0, 0, :4, :4] = 2.0  # class 0's strongest weights: the top-left 4x4 block, red channel
    weight[1] = -0.25
    lin = nn.Linear(192, 2)
    with torch.no_grad():
        lin.weight.copy_(weight.flatten(1))
        lin.bias.copy_(torch.tensor([100.0, 0.0]))
    model = convlens.wrap(
        nn.Sequential(nn.Flatten(), lin),
        input_size=8,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        resize=None,
        labels=["a", "b"],
    )
    return model, weight


def test_bias_check_on_a_linear_model_matches_hand_values() -> None:
    model, _ = _linear_model()
    x = model.normalize(torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    labels = torch.tensor([0, 1, 1])
    block = torch.zeros(8, 8, dtype=torch.bool)
    block[:4, :4] = True
    bottom = torch.zeros(8, 8, dtype=torch.bool)
    bottom[7] = True
    masks = torch.stack([block, bottom, torch.ones(8, 8, dtype=torch.bool)])
    # saliency of class 0 = |W_0| reduced by max over channels: 2 on the block (16 px), 0.5 on 48 px
    # total 32 + 24 = 56; block mask: outside 24/56; bottom row (0.5 each): outside (56 - 4)/56; all: 0
    report = bias_check(
        model, x, labels, masks, method="saliency", counter=(x[:2], torch.tensor([1, 1]), masks[:2])
    )
    assert report.main.shares.tolist() == pytest.approx([24 / 56, 52 / 56, 0.0], abs=1e-6)
    assert report.main.accuracy == pytest.approx(1 / 3)
    assert report.main.mean_share == pytest.approx((24 / 56 + 52 / 56) / 3, abs=1e-6)
    assert report.main.misclassified() == [1, 2]  # both wrong; image 1 has the larger share
    assert report.main.background_fraction.tolist() == pytest.approx([48 / 64, 56 / 64, 0.0])
    assert report.counter is not None and report.counter.accuracy == 0.0
    d = report.to_dict(top=1)
    assert d["counter_accuracy"] == 0.0 and len(d["main"]["misclassified"]) == 1
    assert d["main"]["misclassified"][0]["outside_share"] == pytest.approx(52 / 56, abs=1e-6)


def test_ranking_puts_nan_last_and_largest_share_first() -> None:
    s = SplitReport(
        shares=torch.tensor([0.2, float("nan"), 0.9, 0.5], dtype=torch.float64),
        predicted=torch.tensor([1, 1, 1, 0]),
        labels=torch.tensor([0, 0, 0, 0]),
        background_fraction=torch.full((4,), 0.5, dtype=torch.float64),
        maps=torch.zeros(4, 2, 2),
        masks=torch.zeros(4, 2, 2, dtype=torch.bool),
    )
    assert s.misclassified() == [2, 0, 1]
    assert s.mean_share == pytest.approx((0.2 + 0.9 + 0.5) / 3)


def test_bad_arguments_are_refused() -> None:
    model, _ = _linear_model()
    x = torch.zeros(2, 3, 8, 8)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    with pytest.raises(BadInputError, match="unknown method"):
        bias_check(model, x, torch.tensor([0, 1]), masks, method="nope")
    with pytest.raises(BadInputError, match="labels"):
        bias_check(model, x, torch.tensor([0, 1, 1]), masks, method="saliency")
    with pytest.raises(BadInputError, match="masks are"):
        bias_check(
            model,
            x,
            torch.tensor([0, 1]),
            torch.zeros(2, 4, 4, dtype=torch.bool),
            method="saliency",
        )
