"""Pointing game (Zhang et al. 2016/2018): hand cases at and around the tolerance."""

from __future__ import annotations

import math

import pytest
import torch

from convlens.errors import BadInputError
from convlens.metrics import pointing_game


def _peak(y: int, x: int, h: int = 64, w: int = 64) -> torch.Tensor:
    m = torch.zeros(h, w)
    m[y, x] = 1.0
    return m


def test_boxes_with_tolerance() -> None:
    maps = torch.stack([_peak(10, 10), _peak(25, 22), _peak(40, 5)])
    boxes = torch.tensor([[20.0, 20.0, 30.0, 30.0]] * 3)  # (x_min, y_min, x_max, y_max)
    # distances to the box: sqrt(10^2 + 10^2) = 14.14 (corner), 0 (inside), sqrt(15^2 + 10^2) = 18.03
    assert pointing_game(maps, boxes, tolerance=0).tolist() == [False, True, False]
    assert pointing_game(maps, boxes, tolerance=14).tolist() == [False, True, False]
    assert pointing_game(maps, boxes, tolerance=15).tolist() == [True, True, False]  # 18.03 > 15
    assert pointing_game(maps, boxes, tolerance=math.hypot(15, 10)).tolist() == [True, True, True]


def test_box_edges_are_inclusive() -> None:
    maps = torch.stack([_peak(30, 30), _peak(31, 30)])
    boxes = torch.tensor([[20, 20, 30, 30], [20, 20, 30, 30]])
    assert pointing_game(maps, boxes, tolerance=0).tolist() == [True, False]


def test_masks_with_tolerance_equal_a_disk_dilation() -> None:
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    mask[0] = (yy - 32) ** 2 + (xx - 32) ** 2 <= 8**2  # a disk of radius 8
    assert pointing_game(_peak(32, 32)[None], mask, tolerance=0).item() is True
    assert (
        pointing_game(_peak(32, 41)[None], mask, tolerance=0).item() is False
    )  # the disk ends at column 40
    assert pointing_game(_peak(32, 41)[None], mask, tolerance=1).item() is True
    # diagonal: the disk pixels nearest to (10, 10) are (26, 27) and (27, 26) (6^2 + 5^2 <= 8^2;
    # (26, 26) is outside), sqrt(16^2 + 17^2) = 23.35 away
    assert pointing_game(_peak(10, 10)[None], mask, tolerance=23.3).item() is False
    assert pointing_game(_peak(10, 10)[None], mask, tolerance=23.4).item() is True
    assert (
        pointing_game(_peak(32, 56)[None], mask, tolerance=15).item() is False
    )  # 16 px from the disk
    assert (
        pointing_game(_peak(32, 55)[None], mask.float()[:, None], tolerance=15).item() is True
    )  # 15 px, (N,1,H,W)


def test_several_objects_and_empty_annotations() -> None:
    maps = torch.stack([_peak(50, 50), _peak(50, 50), _peak(50, 50)])
    boxes = [torch.tensor([[0, 0, 5, 5], [45, 45, 55, 55]]), [[0, 0, 5, 5]], []]
    assert pointing_game(maps, boxes, tolerance=15).tolist() == [True, False, False]
    empty = torch.zeros(1, 64, 64)
    assert pointing_game(maps[:1], empty).tolist() == [False]


def test_ties_use_the_first_maximum_in_raster_order() -> None:
    m = torch.zeros(1, 20, 20)
    m[0, 2, 15] = 1.0
    m[0, 18, 3] = 1.0
    assert pointing_game(m, torch.tensor([[13, 0, 19, 5]]), tolerance=0).tolist() == [True]
    assert pointing_game(m, torch.tensor([[0, 15, 5, 19]]), tolerance=0).tolist() == [False]


def test_bad_inputs() -> None:
    maps = torch.zeros(2, 8, 8)
    with pytest.raises(BadInputError, match="one entry per map"):
        pointing_game(maps, torch.tensor([[0, 0, 1, 1]]))
    with pytest.raises(BadInputError, match="x_max < x_min"):
        pointing_game(maps, torch.tensor([[3, 0, 1, 1], [0, 0, 1, 1]]))
    with pytest.raises(BadInputError, match="masks have shape"):
        pointing_game(maps, torch.zeros(2, 4, 4))
    with pytest.raises(BadInputError, match="tolerance"):
        pointing_game(maps, torch.zeros(2, 8, 8), tolerance=-1)
