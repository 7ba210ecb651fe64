"""Drawing an evaluation (:func:`convlens.metrics.evaluate`): one bar per method and metric."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

__all__ = ["evaluation_figure"]

#: (summary key, error key, title) of the panels, in order
_PANELS = (
    ("deletion_auc", "deletion_sem", "deletion AUC (lower is better)"),
    ("insertion_auc", "insertion_sem", "insertion AUC (higher is better)"),
    ("pointing", None, "pointing game (higher is better)"),
    ("sanity_spearman", None, "Spearman after randomisation (near 0 passes)"),
)


def evaluation_figure(result: Any, *, title: str | None = None) -> Figure:
    """Horizontal bars of each metric with standard errors; baselines drawn grey.

    ``result`` is the :class:`~convlens.results.Result` of :func:`convlens.metrics.evaluate`.
    """
    from convlens.metrics.evaluate import summary_rows

    rows = summary_rows(result)
    panels = [p for p in _PANELS if any(row.get(p[0]) is not None for row in rows)]
    names = [row["method"] for row in rows]
    fig = Figure(figsize=(3.6 * len(panels), 0.8 + 0.32 * len(rows)))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    colours = ["0.6" if name.startswith("baseline:") else "tab:blue" for name in names]
    positions = list(range(len(rows)))[::-1]  # first row on top
    for ax, (key, err, heading) in zip(axes, panels):
        values = [row.get(key) if row.get(key) is not None else 0.0 for row in rows]
        errors = [row.get(err, 0.0) for row in rows] if err else None
        ax.barh(
            positions, values, xerr=errors, color=colours, height=0.7, error_kw={"elinewidth": 0.8}
        )
        for y, row, value in zip(positions, rows, values):
            label = "n/a" if row.get(key) is None else f"{value:.3f}"
            ax.text(value, y, f" {label}", va="center", fontsize=7)
        ax.set_title(heading, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(x=0.25)
    axes[0].set_yticks(positions, names)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
