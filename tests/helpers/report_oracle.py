"""An oracle for the HTML report: decode its pictures, and recompute each one with the
library alone (``explain``, ``attack``, ``visualize_class`` and the renderers) from the
arguments recorded in the picture's provenance, independently of the report's code."""

from __future__ import annotations

import base64
import re
from typing import Any

FIGURE = re.compile(r'<figure data-name="([^"]+)" data-sha256="([0-9a-f]{64})"><img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def figures(page: str) -> list[dict[str, Any]]:
    """Every inlined figure of a report page: name, claimed sha256, decoded PNG bytes."""
    return [{"name": m.group(1), "sha256": m.group(2), "png": base64.b64decode(m.group(3))} for m in FIGURE.finditer(page)]


def library_png(model: Any, batch: Any, name: str, prov: dict[str, Any]) -> bytes:
    """Recompute one picture with the library, independently of the report code."""
    from convlens.adversarial.attack import attack
    from convlens.attribution import explain
    from convlens.inspect import activations, filters
    from convlens.optimize.visualize import visualize_class
    from convlens.render.figures import array_to_png_bytes, figure_to_png_bytes
    from convlens.render.inspect import activations_figure, filters_mosaic
    from convlens.render.optimize import amplified_difference
    from convlens.render.overlay import overlay, to_uint8_image

    kind, _, arg = name.partition(":")
    if kind == "image":
        return array_to_png_bytes(to_uint8_image(batch.originals[0]))
    if kind == "filters":
        return array_to_png_bytes(filters_mosaic(filters(model)))
    if kind == "activations":
        fig = activations_figure(activations(model, batch, arg), 0, max_channels=prov["render"]["max_channels"])
        return figure_to_png_bytes(fig, dpi=prov["render"]["dpi"])
    if kind in ("attribution", "gradcam", "segment"):
        method = prov["method"]
        options = {k: v for k, v in prov["params"].items() if k not in ("reduce", "seconds", "paper")}
        target = prov["target"]["classes"][0]
        result = explain(model, batch, method, target, seed=prov["seed"] or 0, **options)
        return array_to_png_bytes(overlay(result.originals[0], result.display[0], alpha=prov["render"]["alpha"]))
    if kind == "visualize_class":
        given = prov["params_given"]
        result = visualize_class(model, given["cls"], steps=given["steps"], seed=given["seed"])
        return array_to_png_bytes(to_uint8_image(result.tensors["image"][0]))
    if kind == "pgd":
        given = prov["params_given"]
        result = attack(model, model.denormalize(batch.x), "pgd", eps=given["eps"], steps=given["steps"], seed=given["seed"])
        tensor = result.tensors[prov["render"]["tensor"]][0]
        return array_to_png_bytes(to_uint8_image(amplified_difference(tensor) if arg == "perturbation" else tensor))
    raise AssertionError(f"no library recipe for picture {name!r}")
