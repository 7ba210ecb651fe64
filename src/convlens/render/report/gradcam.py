"""Report section: Grad-CAM for the top-3 classes (the course's dog/cat example: each class
lights up its own object)."""

from __future__ import annotations

from typing import Any

from convlens.render.report import (
    Fragment,
    ReportContext,
    ReportSection,
    SectionUnavailable,
    figure_html,
)
from convlens.render.report._common import (
    display_width,
    encoded_image,
    label,
    predicted_classes,
    result_provenance,
)

WIDTH = 240  # CSS pixels
ALPHA = 0.7


def compute(model: Any, batch: Any, ctx: ReportContext) -> list[tuple[int, float, Any]]:
    from convlens.attribution import explain
    from convlens.errors import ConvlensError

    k = min(3, len(model.labels)) if model.labels is not None else 3
    classes, probs = predicted_classes(model, batch, k)
    try:
        return [(cls, p, explain(model, batch, "gradcam", cls)) for cls, p in zip(classes, probs)]
    except ConvlensError as exc:
        raise SectionUnavailable(str(exc)) from None


def render(maps: list[tuple[int, float, Any]], model: Any, ctx: ReportContext) -> Fragment:
    from convlens.render.display import (
        DEFAULT_CLIP,
        display_caption,
        display_settings,
        result_overlay,
    )

    images = []
    for cls, p, result in maps:
        settings = display_settings(result, 0, clip=DEFAULT_CLIP)
        render = {
            "function": "result_overlay",
            "alpha": ALPHA,
            "sign": settings["sign"],
            "clip": settings["clip"],
            "max_side": display_width(WIDTH),
        }
        prov = {**result_provenance(result), "render": render}
        pixels = result_overlay(
            result,
            0,
            sign=render["sign"],
            clip=render["clip"],
            alpha=ALPHA,
            max_side=render["max_side"],
        )
        caption = f"{cls} {label(model, cls)} ({p:.1%})\nlayer {prov.get('layer')}; {display_caption(settings)}"
        images.append(encoded_image(f"gradcam:{cls}", pixels, caption, prov))
    classes = [cls for cls, _, _ in maps]
    ctx.records["gradcam"] = {
        "classes": classes,
        "layer": images[0].provenance.get("layer"),
        "alpha": ALPHA,
    }
    return Fragment(
        "".join(figure_html(i, width=WIDTH) for i in images), images, {"classes": classes}
    )


SECTION = ReportSection("gradcam", "Grad-CAM for the top-3 classes", 50, compute, render)
