"""Pictures for the inspection views: filters, feature maps, gradients, predictions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from convlens.render.colormaps import apply_colormap
from convlens.render.grid import labelled_grid, tile_grid
from convlens.render.overlay import overlay, to_uint8_image

__all__ = [
    "activations_figure",
    "filters_figure",
    "filters_mosaic",
    "gradients_figure",
    "predictions_figure",
]


def _tiles(images: torch.Tensor, upscale: int) -> list[np.ndarray]:
    tiles = []
    for t in images:
        a = (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        if a.shape[2] == 1:
            a = a[:, :, 0]
        if upscale > 1:
            a = np.kron(
                a, np.ones((upscale, upscale) + ((1,) if a.ndim == 3 else ()), dtype=np.uint8)
            )
        tiles.append(a)
    return tiles


def filters_mosaic(result: Any, *, max_tiles: int = 256, upscale: int | None = None) -> np.ndarray:
    """All (up to ``max_tiles``) filter tiles of a ``filters`` result as one image."""
    images = result.tensors["filters"][:max_tiles]
    size = max(images.shape[-2:])
    factor = upscale or max(1, 32 // size)
    return tile_grid(_tiles(images, factor), pad=max(1, factor // 2))


def filters_figure(result: Any, *, max_tiles: int = 64) -> Figure:
    """Filters with their indices as titles (templates are titled by class name)."""
    images = result.tensors["filters"][:max_tiles]
    mode = result.params["mode"]
    labels = result.provenance.get("labels")
    if mode == "channels":
        n_in = result.tensors["weights"].shape[1]
        titles = [f"{i // n_in}/{i % n_in}" for i in range(len(images))]
    else:
        titles = [str(labels[i]) if labels else str(i) for i in range(len(images))]
    size = max(images.shape[-2:])
    tiles = _tiles(images, max(1, 32 // size))
    layer = result.layer
    heading = {
        "rgb": "RGB filters",
        "channels": "kernels (filter/input channel)",
        "template": "templates",
    }[mode]
    return labelled_grid(
        tiles, titles, suptitle=f"{result.provenance['model']} {layer}: {heading}", tile_inches=1.0
    )


def activations_figure(
    result: Any, index: int = 0, *, max_channels: int = 32, cmap: str | None = None
) -> Figure:
    """The strongest channels of one image's feature maps, titled with channel index and mean."""
    acts = result.tensors["activations"][index]
    order = result.tensors["channel_order"][index][:max_channels]
    strength = result.tensors["channel_strength"][index]
    if acts.dim() != 3:
        raise ValueError(
            "feature maps need a (C, h, w) layer output; this layer's output is not spatial"
        )
    maps = [acts[c].float().cpu().numpy() for c in order.tolist()]
    titles = [f"ch {c} ({strength[c]:.2g})" for c in order.tolist()]
    src = result.sources[index] if result.sources else ""
    return labelled_grid(
        maps,
        titles,
        cmap=cmap,
        suptitle=f"{result.provenance['layer']} of {src}: strongest channels first",
        tile_inches=1.3,
    )


def gradients_figure(result: Any, index: int = 0) -> Figure:
    """Left: per-layer norms of dL/dh (log scale) with a few spatial maps; right: |ds/dx|."""
    names: Sequence[str] = result.params["layers"]
    norms = result.tensors["layer_norms"][index].float().cpu().numpy()
    picks = result.params["map_layers"]
    fig = Figure(figsize=(12, 6.5))
    grid = fig.add_gridspec(2, max(2, len(picks)) + 2)
    ax = fig.add_subplot(grid[0, : max(2, len(picks))])
    ax.semilogy(np.arange(len(names)), np.maximum(norms, 1e-12), marker=".", linewidth=1)
    ax.set_title(
        "gradient of the loss w.r.t. each layer (L2 norm), layers in execution order", fontsize=10
    )
    step = max(1, len(names) // 12)
    ax.set_xticks(np.arange(0, len(names), step))
    ax.set_xticklabels(
        [names[i] for i in range(0, len(names), step)], rotation=60, ha="right", fontsize=6
    )
    for j, name in enumerate(picks):
        a = fig.add_subplot(grid[1, j])
        a.imshow(apply_colormap(result.tensors[f"maps/{name}"][index].float().cpu().numpy()))
        a.set_title(f"|dL/dh| {name}", fontsize=8)
        a.axis("off")
    target = result.params["input_target"]
    what = (
        f"neuron {target['neuron']['layer']}:{target['neuron']['channel']}"
        if "neuron" in target
        else f"class {target.get('classes', ['?'])[index] if target.get('classes') else '?'}"
    )
    for row, (title, picture) in enumerate(
        [
            (
                f"|ds/dx| for {what}",
                overlay(result.originals[index], result.display[index], alpha=0.65),
            ),
            ("original", to_uint8_image(result.originals[index])),
        ]
    ):
        a = fig.add_subplot(grid[row, -2:])
        a.imshow(picture)
        a.set_title(title, fontsize=10)
        a.axis("off")
    fig.suptitle(
        f"{result.provenance['model']}: gradients for {result.sources[index] if result.sources else ''}",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def predictions_figure(
    images: Sequence[Any], predictions: Sequence[Any], *, top: int = 3
) -> Figure:
    """Photos with their top classes as titles."""
    tiles = [to_uint8_image(im) for im in images]
    titles = [
        "\n".join(f"{p:.0%} {lab}" for lab, p in zip(pred.labels[:top], pred.probabilities[:top]))
        for pred in predictions
    ]
    return labelled_grid(tiles, titles, tile_inches=2.4)
