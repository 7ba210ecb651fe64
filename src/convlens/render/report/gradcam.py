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
from convlens.render.report._common import label, png_image, predicted_classes, result_provenance

ALPHA = 0.7


def build(model: Any, batch: Any, ctx: ReportContext) -> Fragment:
    from convlens.attribution import explain
    from convlens.errors import ConvlensError
    from convlens.render.overlay import overlay

    k = min(3, len(model.labels)) if model.labels is not None else 3
    classes, probs = predicted_classes(model, batch, k)
    images = []
    for cls, p in zip(classes, probs):
        try:
            result = explain(model, batch, "gradcam", cls)
        except ConvlensError as exc:
            raise SectionUnavailable(str(exc)) from None
        prov = {**result_provenance(result), "render": {"function": "overlay", "alpha": ALPHA}}
        caption = f"{cls} {label(model, cls)} ({p:.1%})\nlayer {prov.get('layer')}"
        images.append(png_image(f"gradcam:{cls}", overlay(result.originals[0], result.display[0], alpha=ALPHA), caption, prov))
    ctx.records["gradcam"] = {"classes": classes, "layer": images[0].provenance.get("layer"), "alpha": ALPHA}
    return Fragment("".join(figure_html(i, width=240) for i in images), images, {"classes": classes})


SECTION = ReportSection("gradcam", "Grad-CAM for the top-3 classes", 50, build)
