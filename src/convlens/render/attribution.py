"""Pictures of attributions: one map over its photo, every method side by side, models side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from convlens.render.display import (
    DEFAULT_ALPHA,
    DEFAULT_CLIP,
    display_caption,
    display_settings,
    result_overlay,
)
from convlens.render.overlay import to_uint8_image

__all__ = ["attribution_figure", "comparison_figure"]

#: provenance params that are not options a caller chose
_NOT_OPTIONS = {"seconds", "paper", "reduce", "layer", "progress"}


#: longest side of a drawn overlay: the map is averaged onto the photo at about the size a
#: figure tile shows it, instead of matplotlib resampling the blended colours
FIGURE_MAX_SIDE = 512


def _caption(result: Any, index: int, labels: Any, drawn: str = "") -> str:
    prov = result.provenance
    target = prov.get("target", {})
    classes = target.get("classes")
    what = ""
    if classes:
        c = classes[index] if len(classes) > index else classes[0]
        what = f" for {c} {labels.name(c)}" if labels is not None else f" for class {c}"
    elif "neuron" in target:
        n = target["neuron"]
        what = f" for {n['layer']}:{n['channel']}"
    elif "callable" in target:  # region / box / similarity say what they score
        what = f" for {target['callable']}"
    params = prov.get("params", {})
    seconds = params.get("seconds")
    timing = f"\n{seconds * 1000:.0f} ms" if seconds is not None else ""
    # the options the caller chose, so two tiles of one method can be told apart
    chosen = [
        f"{k}={v}"
        for k, v in params.items()
        if k not in _NOT_OPTIONS and not isinstance(v, (list, dict))
    ]
    options = f"\n{', '.join(chosen)}" if chosen else ""
    drawn = f"\n{drawn}" if drawn else ""
    return f"{prov['method']}{options}\n{what.strip()}{drawn}{timing}"


def attribution_figure(
    result: Any,
    index: int = 0,
    *,
    labels: Any = None,
    alpha: float = DEFAULT_ALPHA,
    sign: str | None = None,
    clip: float = DEFAULT_CLIP,
) -> Figure:
    """The original photo and the attribution map over it (sign, clipping and channel
    reduction as :func:`~convlens.render.display.result_overlay`, stated in the caption)."""
    fig = Figure(figsize=(9, 4.6))
    left, right = fig.subplots(1, 2)
    left.imshow(to_uint8_image(result.originals[index]))
    left.set_title(result.sources[index] if result.sources else "", fontsize=9)
    right.imshow(
        result_overlay(result, index, sign=sign, clip=clip, alpha=alpha, max_side=FIGURE_MAX_SIDE)
    )
    right.set_title(
        _caption(
            result,
            index,
            labels,
            display_caption(display_settings(result, index, sign=sign, clip=clip)),
        ),
        fontsize=9,
    )
    for ax in (left, right):
        ax.axis("off")
    fig.tight_layout()
    return fig


def comparison_figure(
    rows: Sequence[tuple[str, Sequence[Any]]],
    index: int = 0,
    *,
    labels: Sequence[Any] | None = None,
    predictions: Sequence[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    max_columns: int = 5,
    sign: str | None = None,
    clip: float = DEFAULT_CLIP,
) -> Figure:
    """A grid per model: the photo, then one tile per method, wrapped at ``max_columns``.

    ``rows`` is ``[(model title, [results...]), ...]``; ``predictions`` one caption per model
    (e.g. the top-k labels); ``labels`` one label set per model for the captions. Each map
    is drawn with ``sign`` (None: each method's default) and ``clip``, said in its caption.
    """
    blocks = []  # (model index, tiles) where a tile is None for the photo or a result
    for r, (_, results) in enumerate(rows):
        tiles: list[Any] = [None, *results]
        for start in range(0, len(tiles), max_columns):
            blocks.append((r, tiles[start : start + max_columns]))
    n_cols = min(max_columns, max(len(t) for _, t in blocks))
    fig = Figure(figsize=(2.7 * n_cols, 3.2 * len(blocks)))
    axes = fig.subplots(len(blocks), n_cols, squeeze=False)
    for row, (r, tiles) in enumerate(blocks):
        title, results = rows[r]
        for col in range(n_cols):
            ax = axes[row][col]
            ax.axis("off")
            if col >= len(tiles):
                continue
            tile = tiles[col]
            if tile is None:
                ax.imshow(to_uint8_image(results[0].originals[index]))  # the photo as it is
                caption = (
                    title if not predictions else f"{title}\n" + predictions[r].replace(", ", "\n")
                )
                ax.set_title(caption, fontsize=8)
            else:
                ax.imshow(
                    result_overlay(
                        tile, index, sign=sign, clip=clip, alpha=alpha, max_side=FIGURE_MAX_SIDE
                    )
                )
                drawn = display_caption(display_settings(tile, index, sign=sign, clip=clip))
                ax.set_title(
                    _caption(tile, index, labels[r] if labels else None, drawn), fontsize=7
                )
    fig.tight_layout()
    return fig
