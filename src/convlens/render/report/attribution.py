"""Report section: every registered attribution method side by side, ranked by faithfulness.

Each method runs through :func:`convlens.attribution.explain` on the predicted class; the
maps are scored with deletion and insertion AUC and ranked by
:func:`convlens.metrics.faithfulness_ranking` (Petsiuk, Das & Saenko 2018, arXiv:1806.07421;
blur fill), by ``insertion - deletion`` (higher = more faithful: the map's top
pixels carry the decision). Quick settings keep the report short; ``full`` runs every
method at its defaults and the metrics with 50 steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convlens.render.report import Fragment, ReportContext, ReportImage, ReportSection, figure_html
from convlens.render.report._common import drawn, esc, label, overlay_image, predicted_classes

if TYPE_CHECKING:
    from convlens.models.model import Model

#: options that keep the quick report fast (methods not listed run with their defaults)
QUICK = {
    "integrated_gradients": {"n_steps": 16},
    "smoothgrad": {"n_samples": 8},
    "smoothgrad_sq": {"n_samples": 8},
    "vargrad": {"n_samples": 8},
    "gradient_shap": {"n_samples": 8},
}
#: costly methods only run with ``full`` (Score-CAM: one forward per channel of the layer;
#: LIME and KernelSHAP: 200 coalition forwards, about 7 s each on Lite0 with one thread)
FULL_ONLY = {"scorecam", "lime", "kernel_shap"}
#: methods with a section of their own
ELSEWHERE = {"segment"}
QUICK_METRIC_STEPS, FULL_METRIC_STEPS = 20, 50
OVERLAY_ALPHA = 0.7
WIDTH = 200  # CSS pixels of each overlay


def method_options(model: Model, name: str, full: bool) -> dict[str, Any]:
    """The options the report passes to ``explain`` for ``name`` on ``model``."""
    options = {} if full else dict(QUICK.get(name, {}))
    if name == "occlusion":
        # a quarter-image patch at half-patch stride: 56/28 at 224 px, 2/1 on 8x8 digits
        side = min(model.input_size)
        patch = max(1, side // 4)
        options.update({"patch": patch, "stride": max(1, patch // 2)})
    return options


def attribution_image(
    model: Model, result: Any, name: str, ctx: ReportContext | None = None
) -> ReportImage:
    """The overlay of one ``explain`` result on the original image, at the size it is shown
    (with the report's sign and clip when ``ctx`` sets them)."""
    return overlay_image(
        f"attribution:{name}",
        result,
        alpha=OVERLAY_ALPHA,
        css_width=WIDTH,
        sign=ctx.sign if ctx is not None else None,
        clip=ctx.clip if ctx is not None else None,
    )


def planned_methods(model: Model, full: bool) -> list[str]:
    """The methods this section runs on ``model`` (one unit of the report's progress each)."""
    from convlens.attribution import applicable_methods

    # attention maps only on models with attention layers
    return [
        n for n in applicable_methods(model) if n not in ELSEWHERE and (full or n not in FULL_ONLY)
    ]


def steps(model: Model, ctx: ReportContext) -> int:
    return len(planned_methods(model, ctx.full))


def compute(model: Model, batch: Any, ctx: ReportContext) -> dict[str, Any]:
    from convlens.attribution import applicable_methods, explain
    from convlens.errors import ConvlensError
    from convlens.metrics import faithfulness_ranking

    steps = FULL_METRIC_STEPS if ctx.full else QUICK_METRIC_STEPS
    (target,), _ = predicted_classes(model, batch, 1)
    results: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    planned = planned_methods(model, ctx.full)
    skipped = [
        (n, "slow; run with --full")
        for n in applicable_methods(model)
        if n in FULL_ONLY and n not in planned
    ]
    units = 2 * len(planned)  # each method's map, then its two curves
    for done, name in enumerate(planned, 1):
        options[name] = method_options(model, name, ctx.full)
        try:
            results[name] = explain(model, batch, name, target, seed=ctx.seed, **options[name])
        except ConvlensError as exc:
            skipped.append((name, str(exc)))
        ctx.advance(done, units)
    ranking = faithfulness_ranking(
        model,
        batch.x,
        {name: r.map for name, r in results.items()},
        target,
        steps=steps,
        progress=lambda done, total: ctx.advance(
            len(planned) + done * len(results) // total, units
        ),
    )
    return {
        "target": target,
        "steps": steps,
        "results": results,
        "options": options,
        "ranking": ranking,
        "skipped": skipped,
    }


def render(data: dict[str, Any], model: Model, ctx: ReportContext) -> Fragment:
    target, steps, skipped = data["target"], data["steps"], data["skipped"]
    rows = []
    for row in data["ranking"]:
        result = data["results"][row.method]
        seconds = result.seconds
        image = attribution_image(model, result, row.method, ctx)
        image = ReportImage(
            image.name,
            image.png,
            f"#{row.rank} {row.method}\n{seconds * 1000:.0f} ms; deletion {row.deletion:.3f}, insertion {row.insertion:.3f}\n{drawn(image)}",
            {
                **image.provenance,
                "metrics": {
                    "deletion_auc": row.deletion,
                    "insertion_auc": row.insertion,
                    "steps": steps,
                    "fill": "blur",
                },
            },
            image.mime,
        )
        rows.append(
            {
                "rank": row.rank,
                "method": row.method,
                "options": data["options"][row.method],
                "seconds": seconds,
                "deletion": row.deletion,
                "insertion": row.insertion,
                "score": row.score,
                "image": image,
            }
        )
    table = "".join(
        f'<tr><td class="num">{r["rank"]}</td><td>{esc(r["method"])}</td><td class="num">{r["seconds"] * 1000:.0f}</td>'
        + f'<td class="num">{r["deletion"]:.3f}</td><td class="num">{r["insertion"]:.3f}</td><td class="num">{r["score"]:.3f}</td></tr>'
        for r in rows
    )
    not_run = "".join(f"<li>{esc(n)}: {esc(why)}</li>" for n, why in skipped)
    html = (
        f"<p>Target: the predicted class, {target} {esc(label(model, target))}. Ranked by insertion &minus; deletion AUC "
        + f"({steps} steps, blurred fill; deletion: lower is better, insertion: higher is better).</p>"
        + '<table class="ranking"><tr><th>rank</th><th>method</th><th>ms</th><th>deletion AUC</th><th>insertion AUC</th><th>ins &minus; del</th></tr>'
        + f"{table}</table>"
        + "".join(figure_html(r["image"], width=WIDTH) for r in rows)
        + (f"<p>Not shown:</p><ul>{not_run}</ul>" if skipped else "")
    )
    ctx.records["attribution"] = {
        "target": target,
        "metric_steps": steps,
        "options": {r["method"]: r["options"] for r in rows},
        "alpha": OVERLAY_ALPHA,
    }
    summary = {
        "target": target,
        "ranking": [
            {k: r[k] for k in ("rank", "method", "seconds", "deletion", "insertion")} for r in rows
        ],
        "skipped": [{"method": n, "reason": why} for n, why in skipped],
    }
    return Fragment(html, [r["image"] for r in rows], summary)


SECTION = ReportSection(
    "attribution",
    "Attribution methods, ranked by faithfulness",
    40,
    compute,
    render,
    steps=steps,
)
