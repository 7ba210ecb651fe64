"""foreground_fraction: the share of pixels in a segment mask, counted by hand."""

from __future__ import annotations

import torch

from convlens.attribution.segment import foreground_fraction


def test_foreground_fraction_counts_pixels_above_the_threshold() -> None:
    mask = torch.zeros(2, 4, 5)
    mask[0, :2, :] = 1.0  # 10 of 20 pixels
    mask[1, 0, 0] = 0.6  # 1 above 0.5
    mask[1, 0, 1] = 0.5  # exactly the threshold: not foreground
    torch.testing.assert_close(foreground_fraction(mask), torch.tensor([0.5, 1 / 20]))
    torch.testing.assert_close(
        foreground_fraction(mask, threshold=0.4), torch.tensor([0.5, 2 / 20])
    )
