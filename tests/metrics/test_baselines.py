"""Baseline maps: Sobel edges where the edges are, a blob at the centre, seeded noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from convlens.errors import BadInputError
from convlens.metrics import baseline_maps, centre_gaussian_map, random_map, sobel_edge_map


def test_sobel_map_peaks_on_a_vertical_edge_and_is_zero_on_flat_regions() -> None:
    x = torch.zeros(1, 3, 12, 20)
    x[..., 11:] = 1.0  # one vertical edge between columns 10 and 11
    edges = sobel_edge_map(x)
    assert edges.shape == (1, 12, 20)
    columns = edges[0].mean(dim=0)
    assert set(torch.nonzero(columns == columns.max()).flatten().tolist()) == {10, 11}
    assert torch.all(edges[0, :, :9] == 0) and torch.all(edges[0, :, 13:] == 0)
    # one row is a horizontal edge of the transposed image: the same map, transposed
    torch.testing.assert_close(sobel_edge_map(x.transpose(2, 3))[0], edges[0].T)


def test_sobel_map_matches_an_independent_sobel_of_the_luma() -> None:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).numpy()
    # scipy's Sobel (unnormalised, 1-2-1 smoothing) is 4x scikit-image's per-axis kernel
    ref = np.stack(
        [
            np.hypot(ndimage.sobel(g, 0, mode="reflect"), ndimage.sobel(g, 1, mode="reflect"))
            / 4
            / math.sqrt(2)
            for g in gray
        ]
    )
    np.testing.assert_allclose(sobel_edge_map(x).numpy(), ref, atol=1e-12)


def test_sobel_map_weights_channels_by_luma() -> None:
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0, :, 4:] = 1.0
    green = torch.zeros(1, 3, 8, 8)
    green[:, 1, :, 4:] = 1.0
    assert sobel_edge_map(green).max() / sobel_edge_map(red).max() == pytest.approx(
        0.587 / 0.299, rel=1e-5
    )
    with pytest.raises(BadInputError, match="pixel-space batch"):
        sobel_edge_map(red[0])


@pytest.mark.parametrize(("h", "w"), [(9, 9), (15, 11)])
def test_centre_gaussian_peaks_at_the_centre(h: int, w: int) -> None:
    blob = centre_gaussian_map(h, w, sigma_frac=0.25, n=2)
    assert blob.shape == (2, h, w) and torch.equal(blob[0], blob[1])
    assert divmod(int(blob[0].argmax()), w) == ((h - 1) // 2, (w - 1) // 2)
    assert blob[0, (h - 1) // 2, (w - 1) // 2] == pytest.approx(1.0)
    torch.testing.assert_close(blob[0], blob[0].flip(0))
    torch.testing.assert_close(blob[0], blob[0].flip(1))
    # the top row of the centre column is (h - 1) / 2 rows from the centre, sigma = h / 4
    assert float(blob[0, 0, (w - 1) // 2]) == pytest.approx(
        math.exp(-(((h - 1) / 2) ** 2) / (2 * (0.25 * h) ** 2)), rel=1e-5
    )


def test_random_map_is_seeded() -> None:
    a = random_map((2, 5, 6), torch.Generator().manual_seed(3))
    b = random_map((2, 5, 6), torch.Generator().manual_seed(3))
    c = random_map((2, 5, 6), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (2, 5, 6) and float(a.min()) >= 0 and float(a.max()) < 1
    with pytest.raises(BadInputError):
        random_map((5, 6), None)  # type: ignore[arg-type]


def test_baseline_maps_bundle() -> None:
    x = torch.rand(3, 3, 10, 12, generator=torch.Generator().manual_seed(5))
    maps = baseline_maps(x, generator=torch.Generator().manual_seed(0))
    assert sorted(maps) == ["centre_gaussian", "random", "sobel_edges"]
    assert all(m.shape == (3, 10, 12) and m.dtype == x.dtype for m in maps.values())
    torch.testing.assert_close(maps["sobel_edges"], sobel_edge_map(x))
