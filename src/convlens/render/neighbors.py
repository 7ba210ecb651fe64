"""Drawing nearest neighbours: the query, then its neighbours with their distances."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from matplotlib.figure import Figure

__all__ = ["neighbors_figure"]


def _show(ax: Any, image: torch.Tensor | None) -> None:
    if image is None:
        ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
    else:
        a = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        ax.imshow(a[..., 0] if a.shape[2] == 1 else a, cmap="gray" if a.shape[2] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])


def neighbors_figure(
    query: torch.Tensor,
    images: list[torch.Tensor | None],
    neighbors: Any,
    *,
    class_name: Callable[[int], str] | None = None,
    ncols: int = 5,
) -> Figure:
    """The query image and a grid of its neighbours, each titled with rank, distance and class.

    ``images`` are the neighbours' pictures (pixel space, None when unreadable), in the order
    of ``neighbors`` (a :class:`~convlens.represent.neighbors.Neighbors`).
    """
    n = len(images)
    cols = min(ncols, max(1, n))
    rows = 1 + -(-n // cols)
    fig = Figure(figsize=(2.0 * cols, 2.2 * rows), dpi=100)
    how = "approximate (HNSW)" if neighbors.ann else "exact"
    recall = neighbors.recall or {}
    extra = f", recall@{recall['k']} {recall['recall']:.3f}" if neighbors.ann and recall else ""
    fig.suptitle(f"{n} nearest images, {neighbors.metric}, {how}{extra}", fontsize=9)
    ax = fig.add_subplot(rows, cols, 1)
    _show(ax, query)
    ax.set_title("query", fontsize=8)
    for i, image in enumerate(images):
        ax = fig.add_subplot(rows, cols, cols + i + 1)
        _show(ax, image)
        label = int(neighbors.labels[i])
        pred = int(neighbors.predictions[i])
        name = class_name(pred) if class_name is not None else str(pred)
        truth = (
            "" if label < 0 else f" (true {class_name(label) if class_name is not None else label})"
        )
        ax.set_title(
            f"#{i + 1} d={float(neighbors.distances[i]):.3g}\n{name[:18]}{truth[:22]}", fontsize=6
        )
    fig.tight_layout()
    return fig
