"""The picture of a defence evaluation: accuracy per defence, clean and under each attack.

Drawing only: the numbers come from :func:`convlens.adversarial.defence_eval.evaluate_defences`.
One group of bars per defence (clean, transfer, non-adaptive, adaptive), a dashed line at the
undefended model's accuracy under attack, and above each defence the share of its apparent
gain that the adaptive attack takes away.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["COLOURS", "defences_figure"]

#: bar colour per column (clean, transfer, non-adaptive, adaptive)
COLOURS = ("#8c8c8c", "#9ecae1", "#4c72b0", "#c44e52")
_NAMES = (
    "clean",
    "transfer (crafted on the undefended model)",
    "non-adaptive (the defence's own gradients)",
    "adaptive (BPDA / EOT)",
)


def defences_figure(result: Any, *, title: str | None = None) -> Figure:
    """Grouped bars of accuracy per defence and column, with the share of apparent gain lost.

    Parameters
    ----------
    result
        A ``"defences"`` :class:`~convlens.results.Result`.
    title
        Default: model, budget and attack steps.
    """
    params = result.params
    rows = list(params["defences"])
    accuracy = np.asarray(result.tensors["accuracy"].detach().cpu().numpy(), dtype=float) * 100
    columns = accuracy.shape[1]
    fig = Figure(figsize=(max(5.5, 1.25 * len(rows) + 2.0), 4.0), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / columns
    positions = np.arange(len(rows))
    for j in range(columns):
        ax.bar(
            positions + (j - (columns - 1) / 2) * width,
            accuracy[:, j],
            width,
            color=COLOURS[j % len(COLOURS)],
            label=_NAMES[j] if j < len(_NAMES) else str(j),
        )
    ax.axhline(accuracy[0, -1], color="black", linestyle="--", linewidth=0.8)
    for i, lost in enumerate(params.get("gain_lost", [])):
        if i > 0 and lost is not None:
            ax.text(
                i,
                102,
                f"gain lost\n{100 * lost:.0f} %",
                ha="center",
                va="bottom",
                fontsize=7,
                linespacing=1.0,
            )
    ax.set_xticks(positions, rows)
    ax.set_ylim(0, 118)
    ax.set_ylabel("accuracy %")
    eps = float(params["eps"])
    budget = f"{round(eps * 255)}/255" if abs(eps * 255 - round(eps * 255)) < 1e-6 else f"{eps:g}"
    ax.set_title(
        title
        or f"{result.provenance.get('model', '')}: defences under L-inf PGD, eps {budget}, {params['steps']} steps",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
