"""Pictures of the privacy experiments: ROC curves, the overfitting sweep, reconstructions,
the trigger beside Neural Cleanse's recovered masks and anomaly indices, and a triggered
image beside its saliency map. Drawing only: every number comes from a result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["backdoor_figure", "reconstructions_figure", "roc_figure", "sweep_figure"]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _grey(ax: Any, image: torch.Tensor, title: str | None = None, **kwargs: Any) -> None:
    a = image.detach().float().cpu()
    a = a[0] if a.dim() == 3 else a
    ax.imshow(
        a.numpy(),
        cmap=kwargs.pop("cmap", "gray"),
        vmin=kwargs.pop("vmin", 0),
        vmax=kwargs.pop("vmax", 1),
        interpolation="nearest",
        **kwargs,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def roc_figure(results: Sequence[Any]) -> Figure:
    """ROC curves (log-scaled FPR) of both attacks, one line per membership result.

    ``results`` are :func:`~convlens.privacy.membership.membership_inference` results; lines
    of the same recipe share a colour.
    """
    from convlens.privacy.membership import roc_curve

    fig = _figure(9, 4)
    axes = fig.subplots(1, 2)
    recipes = sorted({r.params["recipe"]["name"] for r in results})
    colours = {name: f"C{i}" for i, name in enumerate(recipes)}
    for ax, key, title in (
        (axes[0], "loss_scores", "loss threshold (Yeom 2018)"),
        (axes[1], "shadow_scores", "shadow models (Shokri 2017)"),
    ):
        seen: set[str] = set()
        for r in results:
            p = r.params
            name = p["recipe"]["name"]
            fpr, tpr, _ = roc_curve(r.tensors[key], r.tensors["member"])
            metrics = p["loss_threshold" if key == "loss_scores" else "shadow"]
            label = f"{name} (AUC {metrics['auc']:.2f}, seed {r.provenance.get('seed')})"
            ax.plot(
                fpr.clamp_min(1e-3).numpy(),
                tpr.numpy(),
                color=colours[name],
                lw=1.2,
                alpha=0.9,
                label=label,
            )
            seen.add(name)
        grid = np.logspace(-3, 0, 50)
        ax.plot(grid, grid, "k:", lw=0.8, label="chance")
        ax.axvline(0.01, color="grey", lw=0.6, ls="--")
        ax.set_xscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


def sweep_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Attack AUC (and the target's train / held-out accuracy) along the overfitting sweep."""
    axes_names = [a for a in ("epochs", "weight_decay") if any(r["axis"] == a for r in rows)]
    fig = _figure(4.5 * max(1, len(axes_names)), 3.6)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(axes_names))))
    for ax, axis in zip(axes, axes_names):
        part = [r for r in rows if r["axis"] == axis]
        xs = np.arange(len(part))
        ax.plot(xs, [r["loss_threshold"]["auc"] for r in part], "o-", label="AUC loss threshold")
        ax.plot(xs, [r["shadow"]["auc"] for r in part], "s-", label="AUC shadow models")
        ax.plot(
            xs,
            [r["train_accuracy"] - r["held_out_accuracy"] for r in part],
            "^--",
            color="grey",
            label="train - held-out accuracy",
        )
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
        ax.set_xticks(xs, [f"{r['value']:g}" for r in part])
        ax.set_xlabel("epochs" if axis == "epochs" else "weight decay")
        ax.set_ylim(0, 1)
        ax.set_title(f"membership leakage vs {ax.get_xlabel()}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def reconstructions_figure(result: Any) -> Figure:
    """White- and black-box reconstructions per class, titled with the judge's verdict."""
    variants = [v for v in ("white_box", "black_box") if v in result.tensors]
    n = result.tensors[variants[0]].shape[0]
    fig = _figure(1.2 * n, 1.5 * len(variants) + 0.3)
    axes = np.atleast_2d(fig.subplots(len(variants), n))
    p = result.params
    for row, variant in zip(axes, variants):
        images = result.tensors[variant]
        judged = p[variant]["judge_predictions"]
        for c, ax in enumerate(row):
            mark = "ok" if judged[c] == c else f"judge: {judged[c]}"
            _grey(ax, images[c], f"{c} ({mark})")
        row[0].set_ylabel(
            f"{variant.replace('_', '-')}\n{p[variant]['queries_per_class']} q/class", fontsize=8
        )
    fig.suptitle(
        f"model inversion of {result.provenance.get('model')}: judge {p['white_box']['judge_hits']}/{n} white-box, {p['black_box']['judge_hits']}/{n} black-box",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def backdoor_figure(result: Any) -> Figure:
    """Top: the true trigger, the recovered mask and trigger of the named label, the anomaly
    index per label. Bottom: a clean image, the same image triggered, and its saliency."""
    t, p = result.tensors, result.params
    nc = p["neural_cleanse"]
    target = p["trigger"]["target"]
    fig = _figure(11, 6)
    grid = fig.add_gridspec(2, 4)
    true = t["trigger_mask"].float().clone()
    pattern = torch.zeros_like(true)
    (top, left), (h, w) = (p["trigger"]["top"], p["trigger"]["left"]), p["trigger"]["size"]
    pattern[top : top + h, left : left + w] = t["trigger_pattern"]
    _grey(fig.add_subplot(grid[0, 0]), pattern, f"true trigger (target {target})")
    mask = t["masks"][target]
    _grey(
        fig.add_subplot(grid[0, 1]),
        mask,
        f"recovered mask, label {target} (IoU {nc['mask_iou']:.2f})",
        cmap="magma",
    )
    _grey(
        fig.add_subplot(grid[0, 2]), (mask * t["patterns"][target][0]), "recovered mask x pattern"
    )
    ax = fig.add_subplot(grid[0, 3])
    index = t["anomaly_index"].numpy()
    ax.bar(
        np.arange(len(index)),
        index,
        color=["C3" if k == target else "C0" for k in range(len(index))],
    )
    ax.axhline(2, color="k", ls="--", lw=0.8)
    ax.set_xticks(np.arange(len(index)))
    ax.set_xlabel("label")
    ax.set_title("anomaly index (MAD); > 2 flags", fontsize=8)
    _grey(fig.add_subplot(grid[1, 0]), t["example"][0], "clean held-out image")
    _grey(
        fig.add_subplot(grid[1, 1]),
        t["example_triggered"][0],
        f"triggered: predicted {p['example_prediction']}",
    )
    sal = t["example_saliency"][0]
    _grey(
        fig.add_subplot(grid[1, 2]),
        sal / sal.max().clamp_min(1e-12),
        f"saliency of class {target}",
        cmap="inferno",
    )
    ax = fig.add_subplot(grid[1, 3])
    ax.axis("off")
    ac, ss = p["activation_clustering"], p["spectral_signatures"]
    lines = [
        f"poisoned {p['n_poisoned']}/{p['n_train']} ({p['rate']:.0%})",
        f"clean acc {p['clean_model_accuracy']:.3f} -> {p['backdoored_accuracy']:.3f}",
        f"attack success {p['attack_success']:.3f}",
        f"act. clustering P {ac['precision']:.2f} R {ac['recall']:.2f} FPR {ac['false_positive_rate']:.3f}",
        f"spectral sig.   P {ss['precision']:.2f} R {ss['recall']:.2f} FPR {ss['false_positive_rate']:.3f}",
        f"Neural Cleanse names {nc['named_label']} (index {max(nc['anomaly_index']):.1f})",
    ]
    ax.text(0, 0.5, "\n".join(lines), fontsize=8, family="monospace", va="center")
    fig.suptitle(f"BadNets backdoor on {p['dataset']}", fontsize=11)
    fig.tight_layout()
    return fig
