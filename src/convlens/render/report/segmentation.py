"""Report section: saliency segmentation (Simonyan et al. 2014, arXiv:1312.6034, Sec. 3.1),
the ``segment`` attribution method: GrabCut seeded by the class saliency."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convlens.render.report import (
    Fragment,
    ReportContext,
    ReportSection,
    SectionUnavailable,
    figure_html,
)
from convlens.render.report._common import label, overlay_image, predicted_classes

if TYPE_CHECKING:
    from convlens.models.model import Model

WIDTH = 320  # CSS pixels
ALPHA = 0.5


def compute(model: Model, batch: Any, ctx: ReportContext) -> dict[str, Any]:
    from convlens.attribution import METHODS, explain
    from convlens.attribution.segment import foreground_fraction
    from convlens.errors import ConvlensError

    if "segment" not in METHODS:
        raise SectionUnavailable("the segment method is not registered")
    (target,), _ = predicted_classes(model, batch, 1)
    try:
        result = explain(model, batch, "segment", target)
    except ConvlensError as exc:  # also MissingDependencyError (OpenCV not installed)
        raise SectionUnavailable(str(exc)) from None
    fraction = float(foreground_fraction(result.map)[0])
    return {"result": result, "target": target, "fraction": fraction}


def render(data: dict[str, Any], model: Model, ctx: ReportContext) -> Fragment:
    result, target, fraction = data["result"], data["target"], data["fraction"]
    image = overlay_image(
        "segment",
        result,
        alpha=ALPHA,
        css_width=WIDTH,
        caption=f"object mask for {target} {label(model, target)}: {fraction:.0%} of the input",
        sign=ctx.sign,
        clip=ctx.clip,
    )
    params = image.provenance["params"]
    ctx.records["segmentation"] = {"target": target, "params": params, "alpha": ALPHA}
    return Fragment(
        figure_html(image, width=WIDTH),
        [image],
        {"target": target, "foreground_fraction": fraction},
    )


SECTION = ReportSection("segmentation", "Saliency segmentation", 60, compute, render)
