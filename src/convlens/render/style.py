"""Pictures of style: Gram-matrix heatmaps, content/style/result strips, textures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from convlens.render.grid import labelled_grid
from convlens.render.overlay import to_uint8_image

__all__ = ["gram_figure", "style_figure", "texture_figure"]


def gram_figure(
    gram: torch.Tensor,
    mean: torch.Tensor | None = None,
    variance: torch.Tensor | None = None,
    *,
    title: str = "",
) -> Figure:
    """A Gram matrix ``(C, C)`` as a heatmap, with the channel means and variances beside it."""
    panels = 1 + (mean is not None) + (variance is not None)
    fig = Figure(figsize=(4.2 + 2.2 * (panels - 1), 3.8), layout="constrained")
    widths = [4] + [1] * (panels - 1)
    axes = fig.subplots(1, panels, width_ratios=widths, squeeze=False)[0]
    g = gram.detach().float().cpu().numpy()
    im = axes[0].imshow(g, cmap="viridis", interpolation="nearest")
    axes[0].set_title(
        f"Gram matrix {g.shape[0]}x{g.shape[1]}" + (f"\n{title}" if title else ""), fontsize=9
    )
    axes[0].set_xlabel("channel")
    axes[0].set_ylabel("channel")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    k = 1
    for name, values in (("mean", mean), ("variance", variance)):
        if values is None:
            continue
        v = values.detach().float().cpu().numpy()
        axes[k].barh(np.arange(len(v)), v, height=1.0, color="#4c72b0")
        axes[k].invert_yaxis()
        axes[k].set_title(f"channel {name}", fontsize=9)
        axes[k].set_yticks([])
        k += 1
    return fig


def style_figure(
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    result: torch.Tensor,
    *,
    style_titles: Sequence[str] | None = None,
    caption: str | None = None,
) -> Figure:
    """Content, each style, and the result (pixel-space ``(C, H, W)`` or ``(1, C, H, W)``) in a row."""

    def picture(x: torch.Tensor) -> np.ndarray:
        return to_uint8_image((x[0] if x.dim() == 4 else x).detach().float().cpu())

    images = [picture(content), *(picture(s) for s in styles), picture(result)]
    titles = [
        "content",
        *(style_titles or [f"style {k + 1}" for k in range(len(styles))]),
        "result",
    ]
    return labelled_grid(images, titles, ncols=len(images), suptitle=caption, tile_inches=2.6)


def texture_figure(
    sample: torch.Tensor, texture: torch.Tensor, *, caption: str | None = None
) -> Figure:
    """The sample beside the synthesised texture (shown at their relative sizes)."""
    s = sample[0] if sample.dim() == 4 else sample
    t = texture[0] if texture.dim() == 4 else texture
    fig = Figure(figsize=(7.5, 4.0), layout="constrained")
    h = max(s.shape[-2], t.shape[-2])
    axes = fig.subplots(1, 2, width_ratios=[s.shape[-1] / h, t.shape[-1] / h])
    for ax, image, title in (
        (axes[0], s, f"sample {s.shape[-1]}x{s.shape[-2]}"),
        (axes[1], t, f"texture {t.shape[-1]}x{t.shape[-2]}"),
    ):
        ax.imshow(to_uint8_image(image.detach().float().cpu()))
        ax.set_xlim(0, image.shape[-1])
        ax.set_ylim(h, 0)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    if caption:
        fig.suptitle(caption, fontsize=10)
    return fig
