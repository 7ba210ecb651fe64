"""Report section: saliency segmentation (Simonyan et al. 2014, arXiv:1312.6034, Sec. 3.1),
the ``segment`` attribution method: GrabCut seeded by the class saliency."""

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

ALPHA = 0.5


def build(model: Any, batch: Any, ctx: ReportContext) -> Fragment:
    from convlens.attribution import METHODS, explain
    from convlens.errors import ConvlensError
    from convlens.render.overlay import overlay

    if "segment" not in METHODS:
        raise SectionUnavailable("the segment method is not registered")
    (target,), _ = predicted_classes(model, batch, 1)
    try:
        result = explain(model, batch, "segment", target)
    except ConvlensError as exc:  # also MissingDependencyError (OpenCV not installed)
        raise SectionUnavailable(str(exc)) from None
    mask = result.tensors["map"][0]
    fraction = float((mask > 0.5).float().mean())
    prov = {**result_provenance(result), "render": {"function": "overlay", "alpha": ALPHA}}
    image = png_image("segment", overlay(result.originals[0], result.display[0], alpha=ALPHA), f"object mask for {target} {label(model, target)}: {fraction:.0%} of the input", prov)
    ctx.records["segmentation"] = {"target": target, "params": prov["params"], "alpha": ALPHA}
    return Fragment(figure_html(image, width=320), [image], {"target": target, "foreground_fraction": fraction})


SECTION = ReportSection("segmentation", "Saliency segmentation", 60, build)
