"""Pictures of attacks: original / amplified perturbation / adversarial with top-k; accuracy-vs-budget curves.

Drawing only: the numbers come from :mod:`convlens.adversarial` results.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from convlens.render.optimize import amplified_difference
from convlens.render.overlay import to_uint8_image

__all__ = ["attack_figure", "curve_figure", "transfer_figure"]


def _name(cls: int, labels: Any) -> str:
    return f"{cls} {labels.name(cls)}" if labels is not None else str(cls)


def _topk_text(classes: Any, probs: Any, labels: Any, k: int) -> str:
    return "\n".join(
        f"{float(p):5.1%} {_name(int(c), labels)[:28]}"
        for c, p in zip(classes[:k].tolist(), probs[:k].tolist())
    )


def attack_figure(result: Any, index: int = 0, *, labels: Any = None, top_k: int = 3) -> Figure:
    """Three panels for image ``index`` of an ``attack`` result: the original with its top-k,
    the perturbation amplified to the full range (grey = unchanged), and the adversarial
    image with its top-k; the title gives method, norms, queries and success."""
    t, p = result.tensors, result.params
    linf, l2 = float(t["linf"][index]), float(t["l2"][index])
    scale = 0.5 / max(linf, 1e-12)
    fig = Figure(figsize=(9.6, 4.6))
    axes = fig.subplots(1, 3)
    panels = [
        (
            t["original"][index],
            "original",
            _topk_text(t["top_classes_before"][index], t["top_probs_before"][index], labels, top_k),
        ),
        (
            amplified_difference(t["perturbation"][index]),
            f"perturbation x{scale:.0f}",
            f"L-inf {linf * 255:.1f}/255\nL2 {l2:.3f}",
        ),
        (
            t["adversarial"][index],
            "adversarial (8-bit)",
            _topk_text(t["top_classes_after"][index], t["top_probs_after"][index], labels, top_k),
        ),
    ]
    for ax, (picture, title, text) in zip(axes, panels):
        ax.imshow(to_uint8_image(picture.detach().float().cpu()), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(text, fontsize=8, family="monospace", loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    eps = p.get("eps")
    budget = f"eps {eps * 255:.1f}/255 L{p['norm']}" if eps is not None else f"L{p['norm']}"
    queries = int(t["queries"][index])
    verdict = "success" if bool(t["success"][index]) else "FAILED"
    extra = f", {queries} queries" if p.get("black_box") else ""
    kind = "targeted" if p.get("targeted") else "untargeted"
    fig.suptitle(f"{p['method']} ({kind}, {budget}{extra}): {verdict}", fontsize=11)
    fig.tight_layout()
    return fig


def curve_figure(result: Any, *, title: str | None = None) -> Figure:
    """Accuracy vs budget, one line per method, from an ``attack_curve`` result."""
    t, p = result.tensors, result.params
    eps = [float(e) * 255 for e in t["eps"]]
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for method, row in zip(p["methods"], t["accuracy"]):
        ax.plot(eps, [float(a) * 100 for a in row], marker="o", label=method)
    ax.set_xlabel(f"budget eps (L{p['norm']}, x 1/255)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(
        title
        or f"{result.provenance.get('model', '')}: accuracy under attack ({p['images']} images)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def transfer_figure(result: Any) -> Figure:
    """Bar chart of transfer rates, source first."""
    p = result.params
    rates = [float(r) * 100 for r in result.tensors["rate"]]
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    names = [f"{m}\n(source)" if i == 0 else m for i, m in enumerate(p["models"])]
    ax.bar(names, rates, color=["#444"] + ["#1f77b4"] * (len(rates) - 1))
    for i, r in enumerate(rates):
        ax.text(i, r + 1, f"{r:.0f}%", ha="center", fontsize=9)
    ax.set_ylim(0, 105)
    ax.set_ylabel("fooled (%)")
    ax.set_title(
        f"{p['method']} eps {p['eps'] * 255:.0f}/255 crafted on {p['models'][0]}", fontsize=10
    )
    fig.tight_layout()
    return fig
