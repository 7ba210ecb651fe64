"""Report section: an image the model classifies as the predicted class
(:func:`convlens.optimize.visualize_class`, few steps by default)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convlens.render.report import (
    Fragment,
    ReportContext,
    ReportSection,
    SectionUnavailable,
    figure_html,
)
from convlens.render.report._common import label, png_image, predicted_classes, result_provenance

if TYPE_CHECKING:
    from convlens.models.model import Model

QUICK_STEPS, FULL_STEPS = 32, 256


def compute(model: Model, batch: Any, ctx: ReportContext) -> dict[str, Any]:
    from convlens.errors import ConvlensError
    from convlens.optimize.visualize import visualize_class

    steps = FULL_STEPS if ctx.full else QUICK_STEPS
    (target,), _ = predicted_classes(model, batch, 1)
    try:
        result = visualize_class(model, target, steps=steps, seed=ctx.seed, progress=ctx.progress)
    except ConvlensError as exc:
        raise SectionUnavailable(str(exc)) from None
    return {"result": result, "target": target, "steps": steps}


def render(data: dict[str, Any], model: Model, ctx: ReportContext) -> Fragment:
    from convlens.render.overlay import to_uint8_image

    result, target, steps = data["result"], data["target"], data["steps"]
    top1 = result.provenance["top1"][0]
    prov = {
        **result_provenance(result),
        "params_given": {"cls": target, "steps": steps, "seed": ctx.seed},
        "render": {"function": "to_uint8_image"},
    }
    caption = f"{target} {label(model, target)} after {steps} steps\nthe model sees: {top1['label']} ({top1['probability']:.0%}); target {top1['target_probability']:.0%}"
    image = png_image("visualize_class", to_uint8_image(result.image[0]), caption, prov)
    ctx.records["class_visualisation"] = {"target": target, "steps": steps, "seed": ctx.seed}
    return Fragment(
        figure_html(image, width=260), [image], {"target": target, "steps": steps, "top1": top1}
    )


def _steps(model: Model, ctx: ReportContext) -> int:
    return FULL_STEPS if ctx.full else QUICK_STEPS


SECTION = ReportSection(
    "class_visualisation",
    "Class visualisation of the predicted class",
    70,
    compute,
    render,
    steps=_steps,
)
