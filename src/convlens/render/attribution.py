"""Pictures of attributions: one map over its photo, every method side by side, models side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from convlens.render.overlay import overlay, to_uint8_image

__all__ = ["attribution_figure", "comparison_figure"]


def _caption(result: Any, index: int, labels: Any) -> str:
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
    seconds = prov.get("params", {}).get("seconds")
    timing = f"\n{seconds * 1000:.0f} ms" if seconds is not None else ""
    return f"{prov['method']}\n{what.strip()}{timing}"


def attribution_figure(result: Any, index: int = 0, *, labels: Any = None, alpha: float = 0.7) -> Figure:
    """The original photo and the attribution map over it."""
    fig = Figure(figsize=(9, 4.6))
    left, right = fig.subplots(1, 2)
    left.imshow(to_uint8_image(result.originals[index]))
    left.set_title(result.sources[index] if result.sources else "", fontsize=9)
    right.imshow(overlay(result.originals[index], result.display[index], alpha=alpha))
    right.set_title(_caption(result, index, labels), fontsize=9)
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
    alpha: float = 0.7,
) -> Figure:
    """A grid: one row per model, the photo then one column per method.

    ``rows`` is ``[(row title, [results...]), ...]``; ``predictions`` one caption per row
    (e.g. the top-k labels); ``labels`` one label set per row for the captions.
    """
    n_cols = 1 + max(len(results) for _, results in rows)
    fig = Figure(figsize=(2.6 * n_cols, 3.3 * len(rows)))
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, (title, results) in enumerate(rows):
        first = results[0]
        axes[r][0].imshow(to_uint8_image(first.originals[index]))
        caption = title if not predictions else f"{title}\n" + predictions[r].replace(", ", "\n")
        axes[r][0].set_title(caption, fontsize=8)
        for c, result in enumerate(results, start=1):
            axes[r][c].imshow(overlay(result.originals[index], result.display[index], alpha=alpha))
            axes[r][c].set_title(_caption(result, index, labels[r] if labels else None), fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.tight_layout()
    return fig
