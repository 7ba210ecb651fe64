"""Pictures of robustness evaluations: corruption error tables, a corruption grid, shape bias.

Drawing only: the numbers come from :mod:`convlens.robustness` results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from convlens.render.grid import labelled_grid
from convlens.render.overlay import to_uint8_image

__all__ = ["corruption_errors_figure", "corruption_grid_figure", "shape_bias_figure"]


def _pretty(name: str) -> str:
    return name.replace("_", " ")


def corruption_errors_figure(result: Any, *, title: str | None = None) -> Figure:
    """A heat table of error per corruption x severity, beside a line plot of error vs severity.

    ``result`` is the :class:`~convlens.results.Result` of
    :func:`convlens.robustness.corruption_robustness` (or its provenance params dict).
    """
    params = result.provenance["params"] if hasattr(result, "provenance") else dict(result)
    names, levels = list(params["corruptions"]), list(params["severities"])
    table = np.array([params["errors"][c] for c in names], dtype=float) * 100
    clean = 100 * float(params["clean_error"])
    fig = Figure(figsize=(4.2 + 0.55 * len(levels) + 4.5, max(3.5, 1.2 + 0.32 * len(names))), layout="constrained")
    heat_ax, line_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6 + 0.35 * len(levels), 3.2]})
    image = heat_ax.imshow(table, cmap="Reds", vmin=0, vmax=100, aspect="auto")
    heat_ax.set_xticks(range(len(levels)), [str(s) for s in levels])
    heat_ax.set_yticks(range(len(names)), [_pretty(n) for n in names])
    heat_ax.set_xlabel("severity")
    heat_ax.set_title(f"top-1 error % (clean {clean:.0f} %)", fontsize=10)
    for i in range(len(names)):
        for j in range(len(levels)):
            value = table[i, j]
            heat_ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7, color="white" if value > 60 else "black")
    fig.colorbar(image, ax=heat_ax, fraction=0.05, pad=0.02)
    # One line per family keeps 15 lines readable: the mean over the family's corruptions.
    from convlens.robustness.corruptions import FAMILIES

    line_ax.axhline(clean, color="0.4", linestyle="--", linewidth=1, label="clean")
    for family, members in FAMILIES.items():
        rows = [names.index(m) for m in members if m in names]
        if rows:
            line_ax.plot(levels, table[rows].mean(axis=0), marker="o", label=family)
    line_ax.plot(levels, table.mean(axis=0), marker="s", color="black", linewidth=2, label="all")
    line_ax.set_xticks(levels)
    line_ax.set_ylim(0, 100)
    line_ax.set_xlabel("severity")
    line_ax.set_ylabel("top-1 error %")
    summary = f"mean corruption error {100 * params['mean_corruption_error']:.1f} %"
    if params.get("mce") is not None:
        summary += f"\nmCE {100 * params['mce']:.1f} (AlexNet = 100; ImageNet val only)"
    line_ax.set_title(summary, fontsize=9)
    line_ax.legend(fontsize=8, loc="upper left")
    line_ax.grid(alpha=0.3)
    fig.suptitle(title or f"Common corruptions ({params.get('n_images', '?')} images)")
    return fig


def corruption_grid_figure(
    images: Mapping[str, Sequence[torch.Tensor]] | Mapping[str, torch.Tensor], severities: Sequence[int], *, ncols: int | None = None
) -> Figure:
    """Each corruption at each severity: ``{corruption: (S, C, H, W)}`` pixels, corruption after
    corruption, ``ncols`` tiles a row (default one row per corruption)."""
    names = list(images)
    pictures, titles = [], []
    for name in names:
        for severity, picture in zip(severities, images[name]):
            pictures.append(to_uint8_image(picture))
            titles.append(f"{_pretty(name)} {severity}" if severity else "clean")
    return labelled_grid(pictures, titles, ncols=ncols or len(severities), tile_inches=1.5)


def shape_bias_figure(result: Any, *, title: str | None = None, reference: Mapping[str, float] | None = None) -> Figure:
    """Per-category fraction of shape decisions, like Fig. 4 of Geirhos et al. 2019.

    Categories on the vertical axis, the fraction of "shape" decisions on the horizontal
    one (bottom axis: the fraction of "texture" decisions, its complement), one marker per
    category and a vertical line at the overall shape bias. ``reference`` adds other
    models' overall shape bias as labelled dotted lines.
    """
    params = result.provenance["params"] if hasattr(result, "provenance") else dict(result)
    per = params["per_category"]
    names = [c for c in per if per[c].get("shape_bias") is not None]
    values = [per[c]["shape_bias"] for c in names]
    fig = Figure(figsize=(5.2, max(3.0, 1.6 + 0.3 * len(names))), layout="constrained")
    ax = fig.subplots()
    positions = list(range(len(names)))[::-1]  # first category on top
    ax.scatter(values, positions, s=60, color="tab:red", zorder=3, label="per category")
    for y in positions:
        ax.axhline(y, color="0.92", linewidth=0.6, zorder=0)
    overall = params.get("shape_bias")
    if overall is not None:
        ax.axvline(overall, color="tab:red", linewidth=1.5, label=f"overall {overall:.3f}")
    for i, (label, value) in enumerate((reference or {}).items()):
        ax.axvline(value, color=f"C{i + 1}", linestyle=":", linewidth=1.2, label=f"{label} {value:.2f}")
    ax.set_yticks(positions, names)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel("fraction of 'texture' decisions")
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["1", "0.75", "0.5", "0.25", "0"])
    top = ax.secondary_xaxis("top")
    top.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", "0.25", "0.5", "0.75", "1"])
    top.set_xlabel("fraction of 'shape' decisions")
    counts = f"{params.get('shape', '?')} shape / {params.get('texture', '?')} texture / {params.get('other', '?')} other"
    ax.set_title(title or f"Shape bias ({params.get('preprocess', '')}; {counts})", fontsize=9, pad=10)
    ax.legend(fontsize=7, loc="lower right")
    return fig
