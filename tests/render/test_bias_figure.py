"""Pictures of the bias check (convlens.render.bias): the outline rule by hand, and the
figures lay out what they say (one image axis per shown mistake / sample)."""

from __future__ import annotations

import numpy as np
import torch

from convlens.data.biased import make_biased
from convlens.metrics.bias import BiasReport, SplitReport
from convlens.render.bias import _outline, bias_figure, bias_samples_figure


def test_outline_is_the_mask_border() -> None:
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    expected = mask.copy()
    expected[2, 2] = False  # the only pixel whose four neighbours are all on
    assert np.array_equal(_outline(mask), expected)


def _split(shares: list[float], predicted: list[int]) -> SplitReport:
    n = len(shares)
    return SplitReport(
        torch.tensor(shares, dtype=torch.float64),
        torch.tensor(predicted),
        torch.zeros(n, dtype=torch.long),
        torch.full((n,), 0.75, dtype=torch.float64),
        torch.rand(n, 8, 8),
        torch.ones(n, 8, 8, dtype=torch.bool),
    )


def test_bias_figure_shows_the_worst_mistakes_of_both_splits() -> None:
    report = BiasReport(
        _split([0.1, 0.9, 0.5], [0, 1, 1]),
        _split([0.7, 0.2], [1, 1]),
        "saliency",
        "abs",
        None,
        "toy",
    )
    fig = bias_figure(report, torch.rand(3, 3, 8, 8), torch.rand(2, 3, 8, 8), top=3)
    titles = [a.get_title() for a in fig.axes if not a.axison]
    # mistakes: main 1 (0.9), main 2 (0.5), counter 0 (0.7), counter 1 (0.2) -> top 3 by share
    assert [t.split("outside ")[1] for t in titles] == ["0.90", "0.70", "0.50"]
    assert titles[1].startswith("counter-cue")


def test_samples_figure_has_one_axis_per_image() -> None:
    splits = {"train": make_biased("test"), "counter": make_biased("counter")}
    fig = bias_samples_figure(splits, per_split=4)
    assert len(fig.axes) == 8
    assert (
        fig.axes[4].get_title()
        == f"{int(splits['counter'].labels[0])} on bg {int(splits['counter'].backgrounds[0])}"
    )
