"""One way to turn any map into a picture: which sign is shown, where outliers are clipped,
how opaque each pixel is, and a caption that says all of it.

Every picture of a map goes through here or through :func:`~convlens.render.overlay.overlay`
(which applies the same rules to a bare array): ``Result.plot``, the comparison figures of
``convlens explain`` and ``convlens demo``, the HTML report and the web explorer.

Sign modes, applied to the map ``v`` before anything else:

- ``positive``: ``max(v, 0)``, the evidence *for* the target, on a sequential colormap;
- ``negative``: ``max(-v, 0)``, the evidence *against* it, on a sequential colormap;
- ``absolute``: ``|v|``, how much a pixel matters whatever its sign;
- ``all``: ``v`` itself on a diverging colormap whose white centre is 0.

Clipping: the shown magnitude is divided by its ``clip``-th percentile (default 99) and
saturates above it, as the SmoothGrad and integrated-gradients papers display their maps
(Smilkov et al. 2017, arXiv:1706.03825; Sundararajan et al. 2017, arXiv:1703.01365);
without it one extreme pixel of a gradient map makes the rest black.

Opacity scales with the map: a pixel of scaled magnitude ``u`` in [0, 1] is blended with
weight ``alpha * u``, so zero leaves the photo untouched and only the strongest pixels reach
the full ``alpha``. (A constant opacity covers the whole photo with the colormap's low end.)

Default sign per method (:func:`default_sign`): maps that are never negative (saliency,
CAMs, guided backprop, SmoothGrad, ...) are shown ``positive``, which for them is the same
as ``absolute``. Gradient x input, integrated gradients and LRP are signed at the pixel
level, and their positive and negative pixels interleave like salt and pepper (measured on
EfficientNet-Lite0 and the bundled cat and hopper: 49-50 % of the pixels are negative):
drawn ``all`` on a diverging map, neighbouring red and blue pixels average to a pale veil at
any display size and the picture looks empty (issue 18).
They default to ``positive``, the question a user asks ("what in the photo speaks for this
class?") and the polarity Google's integrated-gradients visualisation shows by default;
``sign="all"`` (CLI ``--sign all``) shows both. Occlusion is signed at the scale of its
patches, where a region that *raises* the score when hidden is readable and worth seeing: it
defaults to ``all``. A map from no known method is ``all`` when it is signed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from convlens.errors import BadInputError
from convlens.render.colormaps import is_signed_map

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CLIP",
    "METHOD_SIGNS",
    "SIGNS",
    "default_sign",
    "display_caption",
    "display_image",
    "display_settings",
    "fit_size",
    "result_overlay",
    "signed_part",
]

SIGNS = ("positive", "absolute", "negative", "all")
"""The sign modes, in the order the CLI lists them."""
DEFAULT_CLIP = 99.0
"""Percentile of the shown magnitude that maps to full colour."""
DEFAULT_ALPHA = 0.7
"""Opacity of the strongest pixels (weaker ones are blended less)."""

#: methods whose default is not decided by the map's values (see the module docstring)
METHOD_SIGNS = {
    "gradient_x_input": "positive",
    "integrated_gradients": "positive",
    "lrp": "positive",
    "lrp_alpha_beta": "positive",
    "occlusion": "all",
    # additive attributions like IG (DeepLIFT and GradientSHAP sum to the score change) and
    # the superpixel methods, whose default answers "what speaks for the class" as LIME's
    # own display does; drawn `all`, KernelSHAP's strongest superpixel on the cat was only
    # 70 % visible against the fur (measured: tests/acceptance visible-maps check)
    "deeplift": "positive",
    "gradient_shap": "positive",
    "kernel_shap": "positive",
    "lime": "positive",
    "superpixel_ablation": "positive",
}

#: how each channel reduction reads in a caption (``reduce`` in the provenance)
_REDUCTIONS = {
    "sum": "sum over colour channels",
    "abs_sum": "sum of |.| over colour channels",
    "max_abs": "max |.| over colour channels",
    "l2": "L2 norm over colour channels",
}


def check_sign(sign: str) -> str:
    """``sign`` itself, or :class:`BadInputError` naming the choices."""
    if sign not in SIGNS:
        raise BadInputError(f"sign={sign!r} is not a sign mode; choose from {', '.join(SIGNS)}")
    return sign


def check_clip(clip: float) -> float:
    """``clip`` itself when it is a percentile in (0, 100], else :class:`BadInputError`."""
    if not isinstance(clip, (int, float)) or isinstance(clip, bool) or not 0 < float(clip) <= 100:
        raise BadInputError(f"clip={clip!r} is not a percentile in (0, 100]; use e.g. 99")
    return float(clip)


def default_sign(method: str | None = None, values: np.ndarray | torch.Tensor | None = None) -> str:
    """The sign mode a map of ``method`` is drawn with unless the caller picks one.

    :data:`METHOD_SIGNS` for the signed methods; otherwise ``"all"`` when ``values`` is a
    signed map (see :func:`~convlens.render.colormaps.is_signed_map`) and ``"positive"``
    when it is not (or when no values are given).
    """
    if method in METHOD_SIGNS:
        return METHOD_SIGNS[method]
    if values is not None and is_signed_map(values):
        return "all"
    return "positive"


def signed_part(values: np.ndarray, sign: str) -> np.ndarray:
    """The part of a map a sign mode shows: ``max(v, 0)``, ``max(-v, 0)``, ``|v|`` or ``v``.

    NaN ("no value here") stays NaN. Returns float64.
    """
    v = np.asarray(values, dtype=np.float64)
    check_sign(sign)
    with np.errstate(invalid="ignore"):
        if sign == "positive":
            return np.where(np.isnan(v), np.nan, np.maximum(v, 0.0))
        if sign == "negative":
            return np.where(np.isnan(v), np.nan, np.maximum(-v, 0.0))
        if sign == "absolute":
            return np.abs(v)
    return v


def scale_shown(shown: np.ndarray, clip: float) -> np.ndarray:
    """Divide a shown map by the ``clip``-th percentile of its magnitude and clip to [-1, 1].

    When that percentile is 0 (a sparse map: most pixels exactly 0) the maximum is used, so
    the few non-zero pixels still show; an all-zero map stays 0. NaN stays NaN.
    """
    finite = np.abs(shown[np.isfinite(shown)])
    if finite.size == 0:
        return shown.copy()
    scale = float(np.percentile(finite, check_clip(clip)))
    if scale <= 0:
        scale = float(finite.max())
    if scale <= 0:
        return np.where(np.isnan(shown), np.nan, 0.0)
    with np.errstate(invalid="ignore"):
        return np.clip(shown / scale, -1.0, 1.0)


def fit_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``(height, width)`` scaled down (never up) so the longer side is at most ``max_side``."""
    height, width = size
    if max_side is None or max(height, width) <= max_side:
        return height, width
    factor = max_side / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def display_image(original: Any, max_side: int | None = None) -> np.ndarray:
    """A picture as uint8 ``(H, W, 3)``, shrunk (antialiased, never enlarged) so its longer
    side is at most ``max_side``: the photo at the size it is shown."""
    from convlens.render.overlay import to_uint8_image

    pixels = to_uint8_image(original)
    size = fit_size(pixels.shape[:2], max_side)
    if size == pixels.shape[:2]:
        return pixels
    # antialiased downscale: the photo the map is drawn on, at the size it is shown
    return np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def display_settings(
    result: Any, index: int = 0, *, sign: str | None = None, clip: float = DEFAULT_CLIP
) -> dict[str, Any]:
    """The sign, clip and channel reduction a result's map is drawn with (for captions and
    provenance): ``{"sign": ..., "clip": ..., "reduce": ...}``."""
    method = result.provenance.get("method")
    chosen = check_sign(sign) if sign is not None else default_sign(method, result.display[index])
    return {
        "sign": chosen,
        "clip": check_clip(clip),
        "reduce": result.params.get("reduce"),
    }


def display_caption(settings: dict[str, Any]) -> str:
    """One line saying how a map was drawn, e.g. ``"sum over colour channels; positive; clip 99%"``."""
    how = settings.get("reduce")
    parts = [_REDUCTIONS.get(how, f"channels: {how}")] if how else []
    clip = settings["clip"]
    parts += [str(settings["sign"]), f"clip {clip:g}%"]
    return "; ".join(parts)


def result_overlay(
    result: Any,
    index: int = 0,
    *,
    sign: str | None = None,
    clip: float = DEFAULT_CLIP,
    alpha: float = DEFAULT_ALPHA,
    cmap: Any = None,
    max_side: int | None = None,
) -> np.ndarray:
    """A result's map over its original image, drawn with the method's default sign.

    Parameters
    ----------
    result
        A :class:`~convlens.results.Result` with ``display`` and ``originals``.
    index
        Which image of the result.
    sign
        ``"positive"``, ``"absolute"``, ``"negative"`` or ``"all"``; None: :func:`default_sign`.
    clip
        Percentile of the shown magnitude drawn at full colour (default 99).
    alpha
        Opacity of the strongest pixels.
    cmap
        Colormap; None: viridis, or the diverging map for ``"all"``.
    max_side
        Draw at most this many pixels on the longer side (the photo is downscaled first and
        the map averaged onto it, so a fine map is summarised, not aliased); None: the
        original size.

    Returns
    -------
    numpy.ndarray
        uint8 ``(H, W, 3)``.

    Raises
    ------
    BadInputError
        If the result has no map, or an option is invalid.
    """
    from convlens.render.overlay import overlay

    if result.display is None or result.originals is None:
        raise BadInputError(f"a {result.kind} result has no map to draw over an image")
    settings = display_settings(result, index, sign=sign, clip=clip)
    image = display_image(result.originals[index], max_side)
    return overlay(
        image,
        result.display[index],
        alpha=alpha,
        cmap=cmap,
        sign=settings["sign"],
        clip=settings["clip"],
    )
