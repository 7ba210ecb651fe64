"""Small helpers the report sections share (no computing, no drawing of their own)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from convlens.render.figures import MEDIA_TYPES, array_to_bytes, array_to_png_bytes
from convlens.render.report import ReportImage

if TYPE_CHECKING:
    from convlens.models.model import Model

esc = html.escape


class Encoding(TypedDict):
    """How a report picture is encoded."""

    format: str
    quality: int


#: lossy pictures (photos, overlays, feature-map grids): format and quality
LOSSY: Encoding = {"format": "jpeg", "quality": 85}


def png_image(
    name: str, pixels: np.ndarray, caption: str, provenance: dict[str, Any]
) -> ReportImage:
    """A :class:`ReportImage` from a library renderer's uint8 array, pixel for pixel."""
    return ReportImage(name, array_to_png_bytes(np.asarray(pixels)), caption, provenance)


def encoded_image(
    name: str,
    pixels: np.ndarray,
    caption: str,
    provenance: dict[str, Any],
    *,
    fmt: str = LOSSY["format"],
    quality: int = LOSSY["quality"],
) -> ReportImage:
    """A :class:`ReportImage` encoded as ``fmt``; the format and quality are recorded in
    ``provenance["render"]`` so the picture can be re-encoded and checked by hash."""
    render = {**provenance.get("render", {}), "format": fmt, "quality": quality}
    data = array_to_bytes(np.asarray(pixels), fmt, quality=quality)
    return ReportImage(name, data, caption, {**provenance, "render": render}, MEDIA_TYPES[fmt])


def overlay_image(
    name: str,
    result: Any,
    *,
    alpha: float,
    css_width: int,
    caption: str = "",
    sign: str | None = None,
    clip: float | None = None,
) -> ReportImage:
    """An attribution result's first map over its original image, as the report shows it:
    ``render.display.result_overlay`` with ``sign`` (None: the method's default), clipped at
    the ``clip`` percentile (None: 99), at twice ``css_width``; how it was drawn goes in
    ``provenance["render"]``."""
    from convlens.render.display import DEFAULT_CLIP, display_settings, result_overlay

    settings = display_settings(result, 0, sign=sign, clip=DEFAULT_CLIP if clip is None else clip)
    render = {
        "function": "result_overlay",
        "alpha": alpha,
        "sign": settings["sign"],
        "clip": settings["clip"],
        "max_side": display_width(css_width),
    }
    pixels = result_overlay(
        result,
        0,
        sign=render["sign"],
        clip=render["clip"],
        alpha=alpha,
        max_side=render["max_side"],
    )
    return encoded_image(name, pixels, caption, {**result_provenance(result), "render": render})


def drawn(image: ReportImage) -> str:
    """How an overlay's map was drawn (channel reduction, sign, clip), for its caption."""
    from convlens.render.display import display_caption

    render = image.provenance["render"]
    return display_caption(
        {
            "reduce": image.provenance.get("params", {}).get("reduce"),
            "sign": render["sign"],
            "clip": render["clip"],
        }
    )


def display_width(css_width: int) -> int:
    """Pixels on the longer side of a picture shown ``css_width`` CSS pixels wide: twice that,
    so it stays sharp on high-density screens."""
    return 2 * css_width


def label(model: Model, cls: int) -> str:
    return model.labels.name(cls) if model.labels is not None else str(cls)


def predicted_classes(model: Model, batch: Any, k: int) -> tuple[list[int], list[float]]:
    """The model's top-``k`` classes and probabilities for the report's image."""
    pred = model.predict(batch, top_k=k)[0]
    return list(pred.classes), list(pred.probabilities)


def result_provenance(result: Any) -> dict[str, Any]:
    """A result's provenance without the per-call clock time (kept in the page header)."""
    return {k: v for k, v in result.provenance.items() if k != "time"}
