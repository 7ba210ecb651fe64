"""Pictures of channel importance: accuracy as channels are removed, per order and at random."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

__all__ = ["pruning_figure"]

_COLOURS = {"ablation": "tab:red", "activation": "tab:blue", "taylor": "tab:green"}


def pruning_figure(result: Any, *, title: str | None = None, ylabel: str = "accuracy") -> Figure:
    """Accuracy against the number of zeroed channels (a :func:`convlens.inspect.pruning_curve`
    result): one line per removal order, the mean of the random orders dashed, their range
    shaded."""
    p, t = result.params, result.tensors
    counts = t["counts"].numpy()
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    randoms = t["random"]
    ax.fill_between(
        counts,
        randoms.min(0).values.numpy(),
        randoms.max(0).values.numpy(),
        color="0.85",
        label=f"random orders (range of {len(randoms)})",
    )
    for name, row in zip(p["names"], t["accuracy"]):
        if name == "random":
            ax.plot(counts, row.numpy(), "k--", label="random (mean)")
        else:
            ax.plot(
                counts, row.numpy(), "-o", ms=3, color=_COLOURS.get(name.split(" ")[0]), label=name
            )
    ax.set_xlabel(f"channels of {p['layer']} zeroed (of {p['channels']})")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(
        title or f"{p['images']} images: removing the least important channels first", fontsize=10
    )
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
