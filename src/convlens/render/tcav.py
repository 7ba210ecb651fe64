"""The TCAV picture: the concept's scores against the random null, with the test's verdict."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["tcav_figure"]


def tcav_figure(results: list[tuple[str, Any]], *, title: str = "") -> Any:
    """One column pair per ``(name, TCAVResult)``: the concept's TCAV scores (one per random
    set) and the random-vs-random null, each point drawn, the means as bars, the p-value
    and verdict above. Returns a matplotlib Figure (``render.figures.save_figure`` writes it)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.8 + 1.9 * len(results), 3.4), layout="constrained")
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # horizontal jitter only, so points do not hide each other
    ticks, labels = [], []
    for k, (name, result) in enumerate(results):
        for j, (values, colour, kind) in enumerate(
            ((result.scores, "tab:red", "concept"), (result.random_scores, "tab:grey", "random"))
        ):
            x = 3 * k + j
            ax.bar(
                x,
                float(np.mean(values)),
                width=0.7,
                color=colour,
                alpha=0.35,
                label=kind if k == 0 else None,
            )
            ax.scatter(
                x + rng.uniform(-0.18, 0.18, len(values)), values, s=14, color=colour, zorder=3
            )
        verdict = "significant" if result.significant else "n.s."
        ax.text(
            3 * k + 0.5,
            1.04,
            f"p = {result.p_value:.2g}\n{verdict}",
            ha="center",
            va="bottom",
            fontsize=8,
        )
        ticks.append(3 * k + 0.5)
        labels.append(name)
    ax.set_xticks(ticks, labels)
    ax.set_ylim(0, 1.22)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("TCAV score")
    ax.axhline(0.5, color="black", lw=0.6, ls=":")
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return fig
