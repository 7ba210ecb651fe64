"""Report section: an adversarial example (PGD, :func:`convlens.adversarial.attack.attack`)
and its perturbation, amplified so that grey means unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convlens.render.report import (
    Fragment,
    ReportContext,
    ReportSection,
    SectionUnavailable,
    figure_html,
)
from convlens.render.report._common import esc, label, png_image, result_provenance

if TYPE_CHECKING:
    from convlens.models.model import Model

#: (eps, steps): a budget small enough to be invisible, large enough to fool a photo model
QUICK, FULL = (2 / 255, 10), (2 / 255, 40)


def compute(model: Model, batch: Any, ctx: ReportContext) -> Any:
    from convlens.adversarial.attack import attack
    from convlens.errors import ConvlensError

    eps, steps = FULL if ctx.full else QUICK
    pixels = model.denormalize(batch.x)
    try:
        return attack(
            model, pixels, "pgd", eps=eps, steps=steps, seed=ctx.seed, progress=ctx.progress
        )
    except ConvlensError as exc:
        raise SectionUnavailable(str(exc)) from None


def render(result: Any, model: Model, ctx: ReportContext) -> Fragment:
    from convlens.render.optimize import amplified_difference
    from convlens.render.overlay import to_uint8_image

    eps, steps = FULL if ctx.full else QUICK
    t = result.tensors
    before, after = int(t["top_classes_before"][0, 0]), int(t["top_classes_after"][0, 0])
    p_before, p_after = float(t["top_probs_before"][0, 0]), float(t["top_probs_after"][0, 0])
    success = bool(t["success"][0])
    linf = float(t["linf"][0])
    prov = {
        **result_provenance(result),
        "params_given": {
            "method": "pgd",
            "eps": eps,
            "steps": steps,
            "seed": ctx.seed,
            "input": "model.denormalize(batch.x)",
        },
    }
    images = [
        png_image(
            "pgd:original",
            to_uint8_image(t["original"][0]),
            f"input: {label(model, before)} ({p_before:.0%})",
            {**prov, "render": {"function": "to_uint8_image", "tensor": "original"}},
        ),
        png_image(
            "pgd:adversarial",
            to_uint8_image(t["adversarial"][0]),
            f"PGD, L-inf {linf * 255:.1f}/255: {label(model, after)} ({p_after:.0%})",
            {**prov, "render": {"function": "to_uint8_image", "tensor": "adversarial"}},
        ),
        png_image(
            "pgd:perturbation",
            to_uint8_image(amplified_difference(t["perturbation"][0])),
            "perturbation, amplified (grey = unchanged)",
            {**prov, "render": {"function": "amplified_difference", "tensor": "perturbation"}},
        ),
    ]
    verdict = "fooled" if success else "not fooled"
    html = (
        f"<p>Untargeted PGD, eps {eps * 255:.0f}/255 (L-inf), {steps} steps, seed {ctx.seed}, on the 8-bit image: "
        + f"<b>{esc(label(model, before))}</b> &rarr; <b>{esc(label(model, after))}</b> ({verdict}; L2 {float(t['l2'][0]):.3f}).</p>"
        + "".join(figure_html(i, width=220) for i in images)
    )
    ctx.records["adversarial"] = {"method": "pgd", "eps": eps, "steps": steps, "seed": ctx.seed}
    summary = {
        "before": before,
        "after": after,
        "success": success,
        "linf_255": round(linf * 255, 3),
        "eps": eps,
        "steps": steps,
    }
    return Fragment(html, images, summary)


def _steps(model: Model, ctx: ReportContext) -> int:
    return (FULL if ctx.full else QUICK)[1]


SECTION = ReportSection("adversarial", "An adversarial example", 80, compute, render, steps=_steps)
