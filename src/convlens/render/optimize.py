"""Pictures of optimised images: galleries, filmstrips and GIFs of the optimisation, fooling images."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from convlens.atomic import atomic_write_bytes
from convlens.render.grid import labelled_grid
from convlens.render.overlay import to_uint8_image

__all__ = [
    "amplified_difference",
    "filmstrip",
    "fooling_figure",
    "gallery_figure",
    "noise_fooling_figure",
    "save_gif",
]


def amplified_difference(difference: torch.Tensor) -> torch.Tensor:
    """A change ``(C, H, W)`` made visible: ``0.5 + d / (2 max|d|)`` (grey = unchanged)."""
    scale = float(difference.abs().max())
    return (
        (0.5 + difference / (2 * scale)).clamp(0, 1)
        if scale > 0
        else torch.full_like(difference, 0.5)
    )


def gallery_figure(
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Pixel-space images ``(B, C, H, W)`` in a titled grid."""
    pictures = [to_uint8_image(image) for image in images.detach().float().cpu()]
    return labelled_grid(pictures, titles, ncols=ncols, suptitle=suptitle, tile_inches=2.2)


def filmstrip(
    snapshots: torch.Tensor, steps: Sequence[int] | None = None, *, index: int = 0
) -> Figure:
    """Snapshots ``(S, B, C, H, W)`` of an optimisation as one row, for image ``index``."""
    frames = snapshots[:, index]
    titles = (
        [f"step {s}" for s in steps] if steps is not None else [f"{k}" for k in range(len(frames))]
    )
    return gallery_figure(frames, titles, ncols=len(frames))


def save_gif(
    snapshots: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    index: int = 0,
    ms_per_frame: int = 120,
) -> Path:
    """Snapshots ``(S, B, C, H, W)`` as an animated GIF of image ``index``, written atomically."""
    frames = [
        Image.fromarray(np.asarray(to_uint8_image(f)))
        for f in snapshots[:, index].detach().float().cpu()
    ]
    buffer = io.BytesIO()
    frames[0].save(
        buffer, format="GIF", save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(out, buffer.getvalue())


def fooling_figure(result: Any, *, labels: Any = None) -> Figure:
    """The photo, the fooling image and the amplified difference, with their classes."""
    t, p = result.tensors, result.params
    original, image = t["original"][0], t["image"][0]
    before = t["original_probabilities"]

    def name(cls: int) -> str:
        return f"{cls} {labels.name(cls)}" if labels is not None else str(cls)

    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, 3)
    panels = [
        (original, f"original: {name(int(before.argmax()))} {float(before.max()):.0%}"),
        (image, f"fooling image: {name(p['predicted'])} {p['probability']:.0%}"),
        (
            amplified_difference(t["difference"][0]),
            f"difference x{0.5 / max(p['linf'], 1e-12):.0f}\nL-inf {p['linf'] * 255:.1f}/255, L2 {p['l2']:.2f}",
        ),
    ]
    for ax, (picture, title) in zip(axes, panels):
        ax.imshow(to_uint8_image(picture.cpu()))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def noise_fooling_figure(results: Sequence[Any], *, labels: Any = None, top_k: int = 3) -> Figure:
    """Fooling images made from noise or patterns (:func:`convlens.optimize.fool_from_noise`),
    one column each: the image with its class and probability, and its top-k classes."""
    results = list(results)
    fig = Figure(figsize=(2.6 * len(results), 4.2))
    axes = fig.subplots(2, len(results), squeeze=False, gridspec_kw={"height_ratios": [3, 1.3]})

    def name(cls: int) -> str:
        return labels.name(cls) if labels is not None else str(cls)

    for col, result in enumerate(results):
        p, probs = result.params, result.tensors["probabilities"]
        top = torch.topk(probs, min(top_k, len(probs)))
        ax = axes[0, col]
        ax.imshow(to_uint8_image(result.image[0].cpu()))
        ax.set_title(
            f"{p['target']} {name(p['target'])}\n{p['probability']:.2%} ({p['pattern']}, {p['steps']} steps)",
            fontsize=8,
        )
        ax.axis("off")
        bars = axes[1, col]
        bars.barh(
            range(len(top.values)),
            top.values.numpy(),
            color=["tab:red" if int(i) == p["target"] else "tab:gray" for i in top.indices],
        )
        bars.set_yticks(
            range(len(top.values)), [name(int(i))[:18] for i in top.indices], fontsize=7
        )
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig
