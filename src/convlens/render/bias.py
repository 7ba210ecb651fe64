"""Picture of a dataset-bias check: where the attribution falls, and the worst mistakes.

Drawing only: the numbers and maps come from :func:`convlens.metrics.bias.bias_check`.
Top row: mean outside-object share per split next to the background's area fraction (the
share a uniform map would give), and accuracy per split. Below: the misclassified images
with the largest outside-object share, the map over the image and the object outlined.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from convlens.render.overlay import overlay, to_uint8_image

__all__ = ["bias_figure", "bias_samples_figure"]


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels on the mask's border (on, with an off 4-neighbour)."""
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~inner


def bias_figure(
    report: Any, images: torch.Tensor, counter_images: torch.Tensor | None = None, *, top: int = 6
) -> Figure:
    """Summary bars and the ``top`` misclassified images with the largest outside-object share.

    Parameters
    ----------
    report
        A :class:`~convlens.metrics.bias.BiasReport`.
    images, counter_images
        Pixel-space ``(N, C, H, W)`` images of the main and counter-cue splits, in the
        report's order.
    top
        How many misclassified images to show (from both splits, largest share first).
    """
    splits = [("main", report.main, images)]
    if report.counter is not None and counter_images is not None:
        splits.append(("counter-cue", report.counter, counter_images))
    worst = [
        (float(s.shares[i]), name, s, imgs, i)
        for name, s, imgs in splits
        for i in s.misclassified()
    ]
    worst = sorted((w for w in worst if not np.isnan(w[0])), key=lambda w: -w[0])[:top]
    cols = max(len(worst), 2)
    fig = Figure(figsize=(2.0 * cols, 4.4 if worst else 2.4))
    grid = fig.add_gridspec(2 if worst else 1, cols, height_ratios=[1.0, 1.1] if worst else [1.0])
    ax = fig.add_subplot(grid[0, : cols // 2])
    names = [name for name, _, _ in splits]
    pos = np.arange(len(splits))
    ax.bar(
        pos - 0.18,
        [s.mean_share for _, s, _ in splits],
        0.36,
        label="outside-object share",
        color="#d62728",
    )
    ax.bar(
        pos + 0.18,
        [s.mean_background_fraction for _, s, _ in splits],
        0.36,
        label="background area",
        color="#bbbbbb",
    )
    ax.set_xticks(pos, names)
    ax.set_ylim(0, 1)
    ax.set_title(f"{report.method} on {report.model}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax2 = fig.add_subplot(grid[0, cols // 2 :])
    ax2.bar(pos, [s.accuracy for _, s, _ in splits], 0.5, color="#1f77b4")
    ax2.set_xticks(pos, names)
    ax2.set_ylim(0, 1.12)
    ax2.set_title("accuracy", fontsize=9)
    for p, (_, s, _) in zip(pos, splits):
        ax2.text(float(p), s.accuracy + 0.02, f"{s.accuracy:.2f}", ha="center", fontsize=8)
    for j, (share, name, s, imgs, i) in enumerate(worst):
        pic = overlay(
            imgs[i], s.maps[i], alpha=0.6, sign="absolute" if report.sign == "abs" else "positive"
        )
        rgb = to_uint8_image(pic).copy()
        rgb[_outline(s.masks[i].numpy())] = (0, 255, 255)
        a = fig.add_subplot(grid[1, j])
        a.imshow(rgb, interpolation="nearest")
        a.set_axis_off()
        a.set_title(
            f"{name}: {int(s.labels[i])} as {int(s.predicted[i])}\noutside {share:.2f}", fontsize=7
        )
    fig.tight_layout()
    return fig


def bias_samples_figure(splits: dict[str, Any], *, per_split: int = 8) -> Figure:
    """The first ``per_split`` images of each split with their object outlined.

    Parameters
    ----------
    splits
        Split name -> a :class:`~convlens.data.biased.BiasedSet` (or anything with
        ``pixels``, ``labels``, ``backgrounds`` and ``masks``).
    per_split
        Images per row.
    """
    fig = Figure(figsize=(1.1 * per_split, 1.3 * len(splits)))
    for r, (name, d) in enumerate(splits.items()):
        for j in range(per_split):
            rgb = to_uint8_image(d.pixels[j]).copy()
            rgb[_outline(d.masks[j].numpy())] = (0, 255, 255)
            a = fig.add_subplot(len(splits), per_split, r * per_split + j + 1)
            a.imshow(rgb, interpolation="nearest")
            a.set_axis_off()
            a.set_title(f"{int(d.labels[j])} on bg {int(d.backgrounds[j])}", fontsize=6)
            if j == 0:
                a.text(-4, 16, name, rotation=90, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig
