"""An oracle for the HTML report: decode its pictures, and recompute each one with the
library alone (``explain``, ``attack``, ``visualize_class`` and the renderers) from the
arguments recorded in the picture's provenance, independently of the report's code."""

from __future__ import annotations

import base64
import re
from typing import Any

FIGURE = re.compile(
    r'<figure data-name="([^"]+)" data-sha256="([0-9a-f]{64})"><img src="data:(image/(?:png|jpeg|webp));base64,([A-Za-z0-9+/=]+)"'
)


def figures(page: str) -> list[dict[str, Any]]:
    """Every inlined figure of a report page: name, claimed sha256, media type, decoded bytes
    (``png`` for history: the encoded picture in whatever format ``mime`` says)."""
    return [
        {
            "name": m.group(1),
            "sha256": m.group(2),
            "mime": m.group(3),
            "png": base64.b64decode(m.group(4)),
        }
        for m in FIGURE.finditer(page)
    ]


def library_png(model: Any, batch: Any, name: str, prov: dict[str, Any]) -> bytes:
    """Recompute one picture with the library, independently of the report code, encoded
    as the provenance records (PNG unless ``render.format`` says JPEG or WebP, with its
    quality): the encoders are deterministic, so equal pixels give equal bytes."""
    from convlens.render.figures import array_to_bytes

    render = prov.get("render", {})
    fmt, quality = render.get("format", "png"), render.get("quality", 85)

    def encode(pixels: Any) -> bytes:
        return array_to_bytes(pixels, fmt, quality=quality)

    return _library_picture(model, batch, name, prov, encode, fmt, quality)


def _library_picture(
    model: Any, batch: Any, name: str, prov: dict[str, Any], encode: Any, fmt: str, quality: int
) -> bytes:
    from convlens.adversarial.attack import attack
    from convlens.attribution import explain
    from convlens.inspect import activations, filters
    from convlens.optimize.visualize import visualize_class
    from convlens.render.display import display_image, result_overlay
    from convlens.render.figures import figure_to_bytes
    from convlens.render.inspect import activations_figure, filters_mosaic
    from convlens.render.optimize import amplified_difference
    from convlens.render.overlay import to_uint8_image

    kind, _, arg = name.partition(":")
    render = prov.get("render", {})

    def overlay(result: Any) -> Any:  # a map over its photo, drawn as recorded
        keys = ("sign", "clip", "alpha", "max_side")
        return result_overlay(result, 0, **{k: render[k] for k in keys})

    if kind == "image":
        return encode(display_image(batch.originals[0], render.get("max_side")))
    if kind == "filters":
        return encode(filters_mosaic(filters(model)))
    if kind == "activations":
        fig = activations_figure(
            activations(model, batch, arg), 0, max_channels=render["max_channels"]
        )
        return figure_to_bytes(fig, dpi=render["dpi"], fmt=fmt, quality=quality)
    if kind in ("attribution", "gradcam", "segment"):
        method = prov["method"]
        options = {
            k: v for k, v in prov["params"].items() if k not in ("reduce", "seconds", "paper")
        }
        target = prov["target"]["classes"][0]
        result = explain(model, batch, method, target, seed=prov["seed"] or 0, **options)
        return encode(overlay(result))
    if kind == "fast_mode":  # "fast_mode:METHOD:eager|fast": on the model or a fast twin
        import copy

        from convlens.models.model import Model

        method, _, mode = arg.partition(":")
        on = model
        if mode == "fast":
            on = Model(copy.deepcopy(model.module), model.preprocessing, fast=True)
        result = explain(on, batch, method, prov["target"]["classes"][0])
        return encode(overlay(result))
    if kind == "visualize_class":
        given = prov["params_given"]
        result = visualize_class(model, given["cls"], steps=given["steps"], seed=given["seed"])
        return encode(to_uint8_image(result.tensors["image"][0]))
    if kind == "pgd":
        given = prov["params_given"]
        result = attack(
            model,
            model.denormalize(batch.x),
            "pgd",
            eps=given["eps"],
            steps=given["steps"],
            seed=given["seed"],
        )
        tensor = result.tensors[render["tensor"]][0]
        return encode(
            to_uint8_image(amplified_difference(tensor) if arg == "perturbation" else tensor)
        )
    raise AssertionError(f"no library recipe for picture {name!r}")
