"""Report section: Grad-CAM for the top-3 classes (the course's dog/cat example: each class
lights up its own object)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from convlens.render.report import (
    Fragment,
    ReportContext,
    ReportSection,
    SectionUnavailable,
    figure_html,
)
from convlens.render.report._common import drawn, label, overlay_image, predicted_classes

if TYPE_CHECKING:
    from convlens.models.model import Model

WIDTH = 240  # CSS pixels
ALPHA = 0.7


def compute(model: Model, batch: Any, ctx: ReportContext) -> list[tuple[int, float, Any]]:
    from convlens.attribution import explain
    from convlens.errors import ConvlensError

    k = min(3, len(model.labels)) if model.labels is not None else 3
    classes, probs = predicted_classes(model, batch, k)
    try:
        return [(cls, p, explain(model, batch, "gradcam", cls)) for cls, p in zip(classes, probs)]
    except ConvlensError as exc:
        raise SectionUnavailable(str(exc)) from None


def render(maps: list[tuple[int, float, Any]], model: Model, ctx: ReportContext) -> Fragment:
    images = []
    for cls, p, result in maps:
        image = overlay_image(
            f"gradcam:{cls}", result, alpha=ALPHA, css_width=WIDTH, sign=ctx.sign, clip=ctx.clip
        )
        caption = f"{cls} {label(model, cls)} ({p:.1%})\nlayer {image.provenance.get('layer')}; {drawn(image)}"
        images.append(replace(image, caption=caption))
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
