"""The robustness pictures draw what the numbers say (read back from the artists)."""

from __future__ import annotations

import pytest
import torch

from convlens.render.robustness import (
    corruption_errors_figure,
    corruption_grid_figure,
    shape_bias_figure,
)
from convlens.robustness import CORRUPTIONS, summarize_corruptions, summarize_shape_bias


def test_corruption_heat_table_shows_the_errors() -> None:
    errors = {c: [0.1 * (i % 3), 0.5, 0.9] for i, c in enumerate(CORRUPTIONS)}
    params = {**summarize_corruptions(errors, [1, 3, 5], clean_error=0.05).to_dict(), "n_images": 7}
    fig = corruption_errors_figure(params)
    heat = fig.axes[0]
    table = heat.images[0].get_array()
    assert table.shape == (15, 3)
    assert float(table[1, 0]) == pytest.approx(10.0) and float(table[0, 2]) == pytest.approx(90.0)
    assert [t.get_text() for t in heat.get_yticklabels()][:2] == ["gaussian noise", "shot noise"]
    assert "mCE" in fig.axes[2].get_title() or any("mCE" in ax.get_title() for ax in fig.axes)


def test_shape_bias_plot_places_each_category_at_its_shape_fraction() -> None:
    s = summarize_shape_bias(
        ["cat", "dog", "cat", "clock"],
        ["cat", "cat", "cat", "clock"],
        ["dog", "dog", "bear", "knife"],
        ["cat", "clock"],
    )
    fig = shape_bias_figure(s.to_dict() | {"preprocess": "standard"})
    ax = fig.axes[0]
    points = ax.collections[0].get_offsets()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    by_name = {labels[len(labels) - 1 - round(y)]: x for x, y in points}
    assert by_name == {"cat": pytest.approx(2 / 3), "clock": pytest.approx(1.0)}
    assert ax.lines[-1].get_xdata()[0] == pytest.approx(3 / 4)  # the overall shape bias


def test_corruption_grid_has_one_tile_per_corruption_and_severity() -> None:
    images = {"fog": torch.rand(3, 3, 8, 8), "snow": torch.rand(3, 3, 8, 8)}
    fig = corruption_grid_figure(images, [0, 1, 5])
    assert sum(1 for ax in fig.axes if ax.images) == 6
