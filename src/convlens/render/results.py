"""Drawing a :class:`~convlens.results.Result`: its picture, whatever made it.

A map over a photo (attribution, saliency) is the map drawn over the original image;
every other kind is drawn by the renderer of its family (an attack's three panels, an
accuracy-vs-budget curve, a Gram matrix, ...), looked up by ``result.kind`` in
:data:`FIGURES`. Results made of images with no dedicated renderer (optimised images,
dreams, stylised photos) show their images. These are the pictures Jupyter shows
(``_repr_png_``; ``_repr_html_`` lays out every image of a batch).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from convlens.render.display import (
    DEFAULT_ALPHA,
    DEFAULT_CLIP,
    display_caption,
    display_settings,
    result_overlay,
)
from convlens.render.figures import figure_to_png_bytes
from convlens.render.overlay import to_uint8_image

__all__ = [
    "FIGURES",
    "NO_PICTURE",
    "has_picture",
    "plot_result",
    "result_count",
    "result_figure",
    "result_html",
    "result_png",
]

#: the most images :func:`result_html` lays out (a batch of 1000 would make a huge cell)
MAX_HTML_IMAGES = 32


def _title(result: Any, index: int) -> str:
    prov = result.provenance
    parts = [str(prov.get("method", result.kind))]
    if prov.get("layer"):
        parts.append(str(prov["layer"]))
    if result.sources and index < len(result.sources):
        parts.append(result.sources[index])
    return " | ".join(parts)


# -- kinds drawn by their family's renderer -------------------------------------------------
# Each takes (result, index, **options) and returns a new Figure; renderers are imported when
# used, so showing one result does not import every family.


def _attack(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.adversarial import attack_figure

    return attack_figure(result, index, **options)


def _curve(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.adversarial import curve_figure

    return curve_figure(result, **options)


def _transfer(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.adversarial import transfer_figure

    return transfer_figure(result)


def _evaluation(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.metrics import evaluation_figure

    return evaluation_figure(result, **options)


def _corruptions(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.robustness import corruption_errors_figure

    return corruption_errors_figure(result, **options)


def _shape_bias(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.robustness import shape_bias_figure

    return shape_bias_figure(result, **options)


def _activations(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.inspect import activations_figure

    if result.tensors["activations"][index].dim() == 3:
        return activations_figure(result, index, **options)
    # a layer without spatial axes: its channels' values, strongest first
    strength = result.tensors["channel_strength"][index].detach().float().cpu()
    order = result.tensors["channel_order"][index].tolist()[:64]
    return _bars(
        [float(strength[c]) for c in order],
        [str(c) for c in order],
        "channel, strongest first",
        "activation",
        _title(result, index),
    )


def _gradients(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.inspect import gradients_figure

    return gradients_figure(result, index)


def _filters(result: Any, index: int, **options: Any) -> Figure:
    """Every filter (up to 256) as one mosaic."""
    from convlens.render.inspect import filters_mosaic

    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.imshow(filters_mosaic(result, **options), interpolation="nearest")
    ax.set_title(_title(result, 0), fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    return fig


def _gram(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.style import gram_figure

    t = result.tensors
    return gram_figure(t["gram"], t.get("mean"), t.get("variance"), title=str(result.layer or ""))


def _style_transfer(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.optimize import gallery_figure

    t = result.tensors
    return gallery_figure(
        _stack([t["content"], t["image"]]),
        ["content", "result"],
        ncols=2,
        suptitle=_title(result, 0),
    )


def _texture(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.style import texture_figure

    return texture_figure(result.tensors["sample"], result.image, caption=_title(result, 0))


def _patches(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.patches import patches_figure

    return patches_figure(result, **options)


def _pruning(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.channels import pruning_figure

    return pruning_figure(result, **options)


def _channel_importance(result: Any, index: int, **options: Any) -> Figure:
    """Bars of each channel's score, most important first (up to 64 channels)."""
    scores = result.scores.detach().float().cpu()
    order = result.tensors["order"].tolist()[:64]  # most important first
    return _bars(
        [float(scores[c]) for c in order],
        [str(c) for c in order],
        "channel, most important first",
        "score",
        _title(result, 0),
    )


def _bars(values: list[float], names: list[str], xlabel: str, ylabel: str, title: str) -> Figure:
    fig = Figure(figsize=(max(4.0, 0.14 * len(values) + 1.5), 3.2))
    ax = fig.add_subplot()
    ax.bar(range(len(values)), values, color="#4c72b0")
    ax.set_xticks(range(len(values)), names, rotation=90, fontsize=6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _defences(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.defences import defences_figure

    return defences_figure(result, **options)


def _backdoor(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.privacy import backdoor_figure

    return backdoor_figure(result)


def _membership(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.privacy import roc_figure

    return roc_figure([result])


def _inversion(result: Any, index: int, **options: Any) -> Figure:
    if result.provenance.get("method") == "model_inversion":  # privacy: reconstructions per class
        from convlens.render.privacy import reconstructions_figure

        return reconstructions_figure(result)
    from convlens.render.optimize import gallery_figure

    t = result.tensors  # feature inversion: the photo and what the layer keeps of it
    return gallery_figure(
        _stack([t["original"][index], t["image"][index]]),
        ["original", f"inverted from {result.provenance.get('layer')}"],
        ncols=2,
    )


def _fooling(result: Any, index: int, **options: Any) -> Figure:
    from convlens.render.optimize import fooling_figure, noise_fooling_figure

    if "difference" in result.tensors:  # from a photo
        return fooling_figure(result, **options)
    return noise_fooling_figure([result], **options)


def _style_training(result: Any, index: int, **options: Any) -> Figure:
    """The fast style net's losses over training."""
    t = result.tensors
    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.add_subplot()
    for name in ("content_loss", "style_loss"):
        ax.semilogy(
            np.maximum(t[name].detach().double().cpu().numpy(), 1e-12), label=name.replace("_", " ")
        )
    ax.set_xlabel("step")
    ax.set_title(_title(result, 0), fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _stack(images: list[Any]) -> Any:
    import torch

    return torch.stack([(i[0] if i.dim() == 4 else i).detach().float().cpu() for i in images])


#: ``kind -> draw(result, index, **options) -> Figure`` for results that are not a map over a photo
FIGURES: dict[str, Callable[..., Figure]] = {
    "activations": _activations,
    "adversarial": _attack,
    "attack_curve": _curve,
    "backdoor": _backdoor,
    "category_probabilities": _shape_bias,
    "channel_importance": _channel_importance,
    "corruption_errors": _corruptions,
    "defences": _defences,
    "evaluation": _evaluation,
    "filters": _filters,
    "fooling": _fooling,
    "gradients": _gradients,
    "gram": _gram,
    "inversion": _inversion,
    "membership": _membership,
    "patches": _patches,
    "pruning_curve": _pruning,
    "style_training": _style_training,
    "style_transfer": _style_transfer,
    "texture": _texture,
    "transfer": _transfer,
}

#: kinds with nothing to draw: numbers only (their text repr says what they hold)
NO_PICTURE = frozenset({"cue_conflict"})


def _per_image(result: Any) -> bool:
    """Whether the kind's figure shows one image of the batch (else the whole result)."""
    if result.kind == "inversion":
        return result.provenance.get("method") != "model_inversion"
    return result.kind in ("activations", "adversarial", "gradients") or result.kind not in FIGURES


def result_count(result: Any) -> int:
    """How many pictures a result has: one per image of a batch for maps, per-image figures
    and image results; one for results drawn as a whole (curves, tables, galleries)."""
    if not _per_image(result):
        return 1
    if result.display is not None and result.originals is not None:
        return len(result.display)
    if result.kind in ("activations", "adversarial"):
        return int(result.tensors[result.kind].shape[0])
    if result.originals is not None:
        return len(result.originals)
    value = result.tensors.get(result.kind)
    return int(value.shape[0]) if value is not None and value.dim() == 4 else 1


def has_picture(result: Any) -> bool:
    """Whether :func:`result_figure` can draw ``result``."""
    if result.kind in NO_PICTURE:
        return False
    if result.kind in FIGURES or result.originals is not None:
        return True
    value = result.tensors.get(result.kind)
    return value is not None and value.dim() in (3, 4)


def _image_panel(result: Any, index: int) -> np.ndarray:
    """The picture of image ``index`` for one axis: the map over the photo, or the image."""
    if result.display is not None and result.originals is not None:
        return result_overlay(result, index)
    if result.originals is not None:
        return to_uint8_image(result.originals[index].detach().float().cpu())
    value = result.value[index].detach().float().cpu()
    return to_uint8_image(value[:3] if value.dim() == 3 else value[None])


def plot_result(
    result: Any,
    ax: Any = None,
    index: int = 0,
    *,
    alpha: float = DEFAULT_ALPHA,
    cmap: str | None = None,
    sign: str | None = None,
    clip: float = DEFAULT_CLIP,
    **options: Any,
) -> Any:
    """Draw image ``index`` of a result on one axis ``ax`` (a new figure when None): its
    display map over the original image (sign and clipping as in
    :func:`~convlens.render.display.result_overlay`, stated in the title), the image of an
    image result, or, for kinds drawn with several panels (:data:`FIGURES`), that figure
    rendered as a picture. Returns the axis."""
    if ax is None:
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
    title = _title(result, index)
    if result.display is not None and result.originals is not None:
        picture = result_overlay(result, index, sign=sign, clip=clip, alpha=alpha, cmap=cmap)
        title += "\n" + display_caption(display_settings(result, index, sign=sign, clip=clip))
    elif result.kind == "filters":  # the mosaic itself, not a picture of its figure
        from convlens.render.inspect import filters_mosaic

        picture = filters_mosaic(result)
    elif result.kind in FIGURES:
        picture = _figure_pixels(FIGURES[result.kind](result, index, **options))
        title = ""  # the figure has its own
    else:
        picture = _image_panel(result, index)
    ax.imshow(np.asarray(picture))
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return ax


def _figure_pixels(fig: Figure) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(figure_to_png_bytes(fig))).convert("RGB"))


def result_figure(result: Any, index: int = 0, **options: Any) -> Figure:
    """A new figure of image ``index`` of ``result``: the renderer of its kind
    (:data:`FIGURES`), else :func:`plot_result` on one axis.

    Raises
    ------
    BadInputError
        ``index`` out of range, or a kind with nothing to draw (:data:`NO_PICTURE`).
    """
    from convlens.errors import BadInputError

    n = result_count(result)
    if not 0 <= index < n:
        raise BadInputError(f"index {index}: this {result.kind} result has {n} picture(s)")
    if not has_picture(result):
        raise BadInputError(
            f"a {result.kind!r} result holds numbers only; read result.tensors / result.provenance"
        )
    if result.kind in FIGURES:
        return FIGURES[result.kind](result, index, **options)
    fig = Figure(figsize=(5, 5))
    plot_result(result, fig.add_subplot(), index, **options)
    fig.tight_layout()
    return fig


def result_png(result: Any, index: int = 0, **options: Any) -> bytes:
    """PNG bytes of :func:`result_figure` (Jupyter's ``_repr_png_``)."""
    return figure_to_png_bytes(result_figure(result, index, **options))


def result_html(result: Any) -> str | None:
    """Every picture of a batch result as one HTML block of inlined PNGs, each captioned
    (Jupyter's ``_repr_html_``); None for a result with a single picture (its PNG says it
    all) or none. At most :data:`MAX_HTML_IMAGES` pictures, with a note of how many more."""
    n = result_count(result) if has_picture(result) else 0
    if n <= 1:
        return None
    shown = min(n, MAX_HTML_IMAGES)
    cells = []
    for i in range(shown):
        data = base64.b64encode(result_png(result, i)).decode("ascii")
        caption = html.escape(
            result.sources[i] if result.sources and i < len(result.sources) else f"[{i}]"
        )
        cells.append(
            '<figure style="margin:4px;display:inline-block;vertical-align:top">'
            + f'<img src="data:image/png;base64,{data}" style="max-width:320px" alt="{caption}">'
            + f'<figcaption style="font-size:small">{caption}</figcaption></figure>'
        )
    more = f"<p>{n - shown} more not shown: result.plot(index=...)</p>" if n > shown else ""
    head = html.escape(f"{result.kind}: {result.provenance.get('method', '')}, {n} images")
    return f'<div class="convlens-result"><p>{head}</p>{"".join(cells)}{more}</div>'
