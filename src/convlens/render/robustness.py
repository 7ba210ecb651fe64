"""Pictures of robustness evaluations: corruption error tables, a corruption grid, shape bias,
and the same evaluations for several models side by side.

Drawing only: the numbers come from :mod:`convlens.robustness` and
:func:`convlens.adversarial.attack_curve` results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from convlens.render.grid import labelled_grid
from convlens.render.overlay import to_uint8_image

__all__ = [
    "attack_curve_comparison_figure",
    "corruption_comparison_figure",
    "corruption_errors_figure",
    "corruption_grid_figure",
    "shape_bias_comparison_figure",
    "shape_bias_figure",
]

#: ``(model name, result)`` pairs, in the order the models were given
Runs = Sequence[tuple[str, Any]]


def _pretty(name: str) -> str:
    return name.replace("_", " ")


def _params(result: Any) -> dict[str, Any]:
    return result.params if hasattr(result, "provenance") else dict(result)


def corruption_errors_figure(result: Any, *, title: str | None = None) -> Figure:
    """A heat table of error per corruption x severity, beside a line plot of error vs severity.

    ``result`` is the :class:`~convlens.results.Result` of
    :func:`convlens.robustness.corruption_robustness` (or its provenance params dict).
    """
    params = result.params if hasattr(result, "provenance") else dict(result)
    names, levels = list(params["corruptions"]), list(params["severities"])
    table = np.array([params["errors"][c] for c in names], dtype=float) * 100
    clean = 100 * float(params["clean_error"])
    fig = Figure(
        figsize=(4.2 + 0.55 * len(levels) + 4.5, max(3.5, 1.2 + 0.32 * len(names))),
        layout="constrained",
    )
    heat_ax, line_ax = fig.subplots(
        1, 2, gridspec_kw={"width_ratios": [1.6 + 0.35 * len(levels), 3.2]}
    )
    image = heat_ax.imshow(table, cmap="Reds", vmin=0, vmax=100, aspect="auto")
    heat_ax.set_xticks(range(len(levels)), [str(s) for s in levels])
    heat_ax.set_yticks(range(len(names)), [_pretty(n) for n in names])
    heat_ax.set_xlabel("severity")
    heat_ax.set_title(f"top-1 error % (clean {clean:.0f} %)", fontsize=10)
    for i in range(len(names)):
        for j in range(len(levels)):
            value = table[i, j]
            heat_ax.text(
                j,
                i,
                f"{value:.0f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > 60 else "black",
            )
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
    images: Mapping[str, Sequence[torch.Tensor]] | Mapping[str, torch.Tensor],
    severities: Sequence[int],
    *,
    ncols: int | None = None,
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


def shape_bias_figure(
    result: Any, *, title: str | None = None, reference: Mapping[str, float] | None = None
) -> Figure:
    """Per-category fraction of shape decisions, like Fig. 4 of Geirhos et al. 2019.

    Categories on the vertical axis, the fraction of "shape" decisions on the horizontal
    one (bottom axis: the fraction of "texture" decisions, its complement), one marker per
    category and a vertical line at the overall shape bias. ``reference`` adds other
    models' overall shape bias as labelled dotted lines.
    """
    params = result.params if hasattr(result, "provenance") else dict(result)
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
        ax.axvline(
            value, color=f"C{i + 1}", linestyle=":", linewidth=1.2, label=f"{label} {value:.2f}"
        )
    ax.set_yticks(positions, names)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel("fraction of 'texture' decisions")
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["1", "0.75", "0.5", "0.25", "0"])
    top = ax.secondary_xaxis("top")
    top.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", "0.25", "0.5", "0.75", "1"])
    top.set_xlabel("fraction of 'shape' decisions")
    counts = f"{params.get('shape', '?')} shape / {params.get('texture', '?')} texture / {params.get('other', '?')} other"
    ax.set_title(
        title or f"Shape bias ({params.get('preprocess', '')}; {counts})", fontsize=9, pad=10
    )
    ax.legend(fontsize=7, loc="lower right")
    return fig


def corruption_comparison_figure(runs: Runs, *, title: str | None = None) -> Figure:
    """Several models under common corruptions: grouped bars and error vs severity.

    Left: for each corruption (and the mean over them), one bar per model with its top-1
    error averaged over the severities; each model's legend entry carries its mCE when all 15
    corruptions ran. Right: the error averaged over the corruptions at each severity, one
    line per model, starting from its clean error at severity 0. ``runs`` holds
    ``(model name, result of corruption_robustness or its params)`` pairs; the models must
    have run the same corruptions and severities.
    """
    params = [(name, _params(result)) for name, result in runs]
    if not params:
        raise ValueError("corruption_comparison_figure: no runs given")
    names, levels = list(params[0][1]["corruptions"]), list(params[0][1]["severities"])
    for model, p in params[1:]:
        if list(p["corruptions"]) != names or list(p["severities"]) != levels:
            raise ValueError(f"{model}: ran other corruptions or severities than {params[0][0]}")
    groups = [*names, "mean"]
    bars_inches = max(4.0, 0.16 * len(groups) * (1 + len(params)))  # wide enough for every bar
    fig = Figure(figsize=(bars_inches + 4.0, 4.6), layout="constrained")
    bar_ax, line_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [bars_inches, 3.4]})
    width = 0.8 / len(params)
    for k, (model, p) in enumerate(params):
        heights = [100 * float(p["corruption_errors"][c]) for c in names] + [
            100 * float(p["mean_corruption_error"])
        ]
        label = model if p.get("mce") is None else f"{model} (mCE {100 * p['mce']:.1f})"
        offsets = [i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
        bar_ax.bar(offsets, heights, width=width, color=f"C{k}", label=label)
        clean = 100 * float(p["clean_error"])
        bar_ax.axhline(clean, color=f"C{k}", linestyle="--", linewidth=1)
        by_level = np.array([p["errors"][c] for c in names], dtype=float).mean(axis=0) * 100
        line_ax.plot([0, *levels], [clean, *by_level], marker="o", color=f"C{k}", label=model)
    bar_ax.set_xticks(
        range(len(groups)), [_pretty(g) for g in groups], rotation=60, ha="right", fontsize=8
    )
    bar_ax.set_ylim(0, 100)
    bar_ax.set_ylabel("top-1 error % (mean over severities)")
    bar_ax.set_title("error per corruption (dashed: clean error)", fontsize=9)
    bar_ax.legend(fontsize=8, loc="upper left")
    bar_ax.grid(axis="y", alpha=0.3)
    line_ax.set_xticks([0, *levels], ["clean", *[str(s) for s in levels]])
    line_ax.set_ylim(0, 100)
    line_ax.set_xlabel("severity")
    line_ax.set_ylabel("top-1 error % (mean over corruptions)")
    line_ax.grid(alpha=0.3)
    line_ax.legend(fontsize=8, loc="upper left")
    n_images = params[0][1].get("n_images", "?")
    fig.suptitle(title or f"Common corruptions, {len(params)} models ({n_images} images)")
    return fig


def attack_curve_comparison_figure(runs: Runs, *, title: str | None = None) -> Figure:
    """Accuracy vs attack budget for several models on the same axes.

    One colour per model, one line style and marker per attack method; ``runs`` holds ``(model name,
    attack_curve result)`` pairs over the same budgets and norm.
    """
    if not runs:
        raise ValueError("attack_curve_comparison_figure: no runs given")
    styles = ["-", "--", ":", "-."]
    fig = Figure(figsize=(6.2, 4.2), layout="constrained")
    ax = fig.subplots()
    first = runs[0][1].params
    for k, (model, result) in enumerate(runs):
        p = result.params
        eps = [float(e) * 255 for e in result.tensors["eps"]]
        for m, (method, row) in enumerate(zip(p["methods"], result.tensors["accuracy"])):
            ax.plot(
                eps,
                [float(a) * 100 for a in row],
                marker="os^D"[m % 4],
                color=f"C{k}",
                linestyle=styles[m % len(styles)],
                label=f"{model} {method}",
            )
    ax.set_xlabel(f"budget eps (L{first['norm']}, x 1/255)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(
        title or f"Accuracy under attack, {len(runs)} models ({first['images']} images)",
        fontsize=10,
    )
    return fig


def shape_bias_comparison_figure(
    runs: Runs, *, title: str | None = None, reference: Mapping[str, float] | None = None
) -> Figure:
    """Shape bias of several models per category, as in Fig. 4 of Geirhos et al. 2019.

    Categories on the vertical axis, the fraction of shape decisions on the horizontal one;
    each model is one colour and marker (a point per category, the models a little apart
    within the row, first on top) with a vertical line at its overall shape bias. ``reference`` adds other overall values as grey dotted lines.
    ``runs`` holds ``(model name, shape_bias result or its params)`` pairs.
    """
    params = [(name, _params(result)) for name, result in runs]
    if not params:
        raise ValueError("shape_bias_comparison_figure: no runs given")
    names: list[str] = []
    for _, p in params:
        names += [c for c in p["per_category"] if c not in names]
    markers = ["o", "s", "D", "^", "v", "P", "X"]
    fig = Figure(figsize=(5.6, max(3.0, 1.6 + 0.3 * len(names))), layout="constrained")
    ax = fig.subplots()
    row_of = {c: len(names) - 1 - i for i, c in enumerate(names)}  # first category on top
    for y in row_of.values():
        ax.axhline(y, color="0.92", linewidth=0.6, zorder=0)
    spread = min(
        0.5, 0.15 * (len(params) - 1)
    )  # models side by side within a row: equal values stay visible
    for k, (model, p) in enumerate(params):
        shown = [
            c
            for c in names
            if c in p["per_category"] and p["per_category"][c].get("shape_bias") is not None
        ]
        overall = p.get("shape_bias")
        label = model if overall is None else f"{model} {overall:.3f}"
        dy = spread / 2 - spread * k / (len(params) - 1) if len(params) > 1 else 0.0
        ax.scatter(
            [p["per_category"][c]["shape_bias"] for c in shown],
            [row_of[c] + dy for c in shown],
            s=50,
            color=f"C{k}",
            marker=markers[k % len(markers)],
            zorder=3,
            label=label,
        )
        if overall is not None:
            ax.axvline(overall, color=f"C{k}", linewidth=1.5)
    for i, (label, value) in enumerate((reference or {}).items()):
        ax.axvline(
            value,
            color="0.5",
            linestyle=[":", "-.", "--"][i % 3],
            linewidth=1.0,
            label=f"{label} {value:.2f}",
        )
    ax.set_yticks(list(row_of.values()), names)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel("fraction of 'texture' decisions")
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["1", "0.75", "0.5", "0.25", "0"])
    top = ax.secondary_xaxis("top")
    top.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", "0.25", "0.5", "0.75", "1"])
    top.set_xlabel("fraction of 'shape' decisions")
    ax.set_title(title or f"Shape bias, {len(params)} models (lines: overall)", fontsize=9, pad=10)
    ax.legend(fontsize=7, loc="lower right")
    return fig
