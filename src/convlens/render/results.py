"""Drawing a :class:`~convlens.results.Result`: the map over the original image."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from convlens.render.display import (
    DEFAULT_ALPHA,
    DEFAULT_CLIP,
    display_caption,
    display_settings,
    result_overlay,
)
from convlens.render.figures import figure_to_png_bytes
from convlens.render.overlay import to_uint8_image

__all__ = ["plot_result", "result_figure", "result_png"]


def _title(result: Any, index: int) -> str:
    prov = result.provenance
    parts = [str(prov.get("method", result.kind))]
    if prov.get("layer"):
        parts.append(str(prov["layer"]))
    if result.sources:
        parts.append(result.sources[index])
    return " | ".join(parts)


def plot_result(
    result: Any,
    ax: Any = None,
    index: int = 0,
    *,
    alpha: float = DEFAULT_ALPHA,
    cmap: str | None = None,
    sign: str | None = None,
    clip: float = DEFAULT_CLIP,
) -> Any:
    """Draw image ``index`` of a result on ``ax``: its display map over the original image
    (sign and clipping as in :func:`~convlens.render.display.result_overlay`, stated in the
    title), or the main tensor as tiles when the result has no map. Returns the axis."""
    if ax is None:
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
    title = _title(result, index)
    if result.display is not None and result.originals is not None:
        picture = result_overlay(result, index, sign=sign, clip=clip, alpha=alpha, cmap=cmap)
        title += "\n" + display_caption(display_settings(result, index, sign=sign, clip=clip))
    elif result.kind == "filters":
        from convlens.render.inspect import filters_mosaic

        picture = filters_mosaic(result)
    else:
        value = result.value[index].detach().float().cpu()
        picture = to_uint8_image(value[:3] if value.dim() == 3 else value[None])
    ax.imshow(np.asarray(picture))
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return ax


def result_figure(result: Any, index: int = 0, **kwargs: Any) -> Figure:
    """A new figure with :func:`plot_result`."""
    fig = Figure(figsize=(5, 5))
    plot_result(result, fig.add_subplot(), index, **kwargs)
    fig.tight_layout()
    return fig


def result_png(result: Any, index: int = 0) -> bytes:
    """PNG bytes of :func:`result_figure` (Jupyter's ``_repr_png_``)."""
    return figure_to_png_bytes(result_figure(result, index))
