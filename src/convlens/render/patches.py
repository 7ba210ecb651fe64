"""Drawing top patches: one row per channel, its k patches (and guided backprop beside each)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["patches_figure"]


def _rgb(t: torch.Tensor) -> np.ndarray:
    a = t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return a[..., 0] if a.shape[2] == 1 else a


def patches_figure(
    result: Any, *, max_channels: int = 16, titles: Sequence[str] | None = None
) -> Figure:
    """The grid of a ``top_patches`` result: rows are channels, columns ranks (value above each).

    With guided backprop in the result, each patch is followed by its guided map.
    """
    patches = result["patches"][:max_channels]
    guided = result.tensors.get("guided")
    channels = result["channels"].tolist()[:max_channels]
    values = result["values"]
    n_rows, k = patches.shape[0], patches.shape[1]
    per = 2 if guided is not None else 1
    cell = 1.15
    fig = Figure(figsize=(cell * k * per + 0.9, cell * n_rows + 0.6), dpi=100)
    layer = result.provenance.get("layer", "")
    fig.suptitle(f"top {k} patches per channel of {layer}", fontsize=10)
    for r in range(n_rows):
        for j in range(k):
            ax = fig.add_subplot(n_rows, k * per, r * k * per + j * per + 1)
            ax.imshow(_rgb(patches[r, j]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{float(values[r, j]):.2f}", fontsize=6, pad=2)
            if j == 0:
                ax.set_ylabel(titles[r] if titles else f"ch {channels[r]}", fontsize=8)
            if guided is not None:
                gx = fig.add_subplot(n_rows, k * per, r * k * per + j * per + 2)
                gx.imshow(_rgb(guided[r, j]), interpolation="nearest")
                gx.set_axis_off()
    fig.subplots_adjust(
        left=0.06,
        right=0.99,
        bottom=0.01,
        top=1 - 0.45 / (cell * n_rows + 0.6),
        wspace=0.06,
        hspace=0.3,
    )
    return fig
