"""Report section: the image and the model's top-k classes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convlens.render.report import Fragment, ReportContext, ReportSection, figure_html
from convlens.render.report._common import display_width, encoded_image, esc

if TYPE_CHECKING:
    from convlens.models.model import Model

WIDTH = 260  # CSS pixels of the photo


def compute(model: Model, batch: Any, ctx: ReportContext) -> dict[str, Any]:
    k = min(ctx.top_k, len(model.labels)) if model.labels is not None else ctx.top_k
    return {"prediction": model.predict(batch, top_k=k)[0], "original": batch.originals[0]}


def render(data: dict[str, Any], model: Model, ctx: ReportContext) -> Fragment:
    from convlens.render.display import display_image

    pred = data["prediction"]
    max_side = display_width(WIDTH)
    render = {"function": "display_image", "max_side": max_side}
    pixels = display_image(data["original"], max_side)
    photo = encoded_image(
        "image",
        pixels,
        ctx.source,
        {**model.provenance(), "method": "image", "source": ctx.source, "render": render},
    )
    rows = "".join(
        f'<tr><td class="num">{k + 1}</td><td class="num">{c}</td><td>{esc(lab)}</td><td>{esc(w or "")}</td>'
        + f'<td class="num">{p:.2%}</td><td><span class="bar" style="width:{max(1, round(150 * p))}px"></span></td></tr>'
        for k, (c, lab, w, p) in enumerate(
            zip(
                pred.classes,
                pred.labels,
                pred.wnids or [None] * len(pred.classes),
                pred.probabilities,
            )
        )
    )
    table = f'<table class="predictions"><tr><th>#</th><th>class</th><th>label</th><th>wnid</th><th>probability</th><th></th></tr>{rows}</table>'
    ctx.records["predictions"] = {"top_k": len(pred.classes)}
    return Fragment(
        f'<div class="row"><div>{figure_html(photo, width=WIDTH)}</div><div>{table}</div></div>',
        [photo],
        {"top": pred.to_dict()["top"]},
    )


SECTION = ReportSection("predictions", "Top-k predictions", 10, compute, render)
