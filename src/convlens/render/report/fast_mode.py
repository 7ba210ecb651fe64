"""Report section: fast mode (``--fast``, :mod:`convlens.models.fast`) next to eager mode.

The same maps computed twice, on the model as given and on a fast-mode copy of it:
saliency (an input gradient: through the batch-norm-folded copy) and Grad-CAM (a hooked
method: channels-last on the original module). The section shows both maps side by side,
how far apart they are (``max |fast - eager| / max |eager|``, the measure the acceptance
test bounds) and the time of each on this machine, so a reader sees what ``--fast`` changes
on their own model: the time, not the picture.
"""

from __future__ import annotations

import copy
import html
import statistics
import time
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

WIDTH = 240  # CSS pixels
ALPHA = 0.5
METHODS = ("saliency", "gradcam")
TIMED_CALLS = 3  # after one untimed call (oneDNN builds its kernels on the first)


def _fast_copy(model: Model) -> Model:
    """A fast-mode twin of ``model`` (its module deep-copied: the caller's stays as it is)."""
    from convlens.models.model import Model

    if model.fast is not None:
        raise SectionUnavailable("the model already runs in fast mode (--fast)")
    twin = Model(
        copy.deepcopy(model.module),
        model.preprocessing,
        labels=model.labels,
        name=model.name,
        weights_sha256=model.weights_sha256,
        device=model.device,
        info=dict(model.info),
    )
    return twin.use_fast()  # where a part does not apply, the record says why (shown)


def _timed(explain: Any, *args: Any) -> tuple[Any, float]:
    """``explain(*args)`` once untimed, then the median time of :data:`TIMED_CALLS` calls."""
    result = explain(*args)
    seconds = []
    for _ in range(TIMED_CALLS):
        start = time.perf_counter()
        explain(*args)
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)


def compute(model: Model, batch: Any, ctx: ReportContext) -> dict[str, Any]:
    from convlens.attribution import METHODS as REGISTERED
    from convlens.attribution import explain
    from convlens.errors import ConvlensError

    fast = _fast_copy(model)
    (target,), _ = predicted_classes(model, batch, 1)
    rows = []
    for i, method in enumerate(m for m in METHODS if m in REGISTERED):
        try:
            eager, eager_s = _timed(explain, model, batch, method, target)
            quick, fast_s = _timed(explain, fast, batch, method, target)
        except ConvlensError:  # e.g. Grad-CAM on a model without a convolutional layer
            continue
        scale = float(eager.map.abs().max()) or 1.0
        gap = float((quick.map - eager.map).abs().max()) / scale
        rows.append(
            {
                "method": method,
                "eager": eager,
                "fast": quick,
                "eager_seconds": eager_s,
                "fast_seconds": fast_s,
                "max_relative_difference": gap,
            }
        )
        ctx.advance(i + 1, len(METHODS))
    if not rows:
        raise SectionUnavailable("neither saliency nor Grad-CAM runs on this model")
    return {"target": target, "rows": rows, "fast": fast.fast}


def render(data: dict[str, Any], model: Model, ctx: ReportContext) -> Fragment:
    target, rows = data["target"], data["rows"]
    parts: list[str] = []
    images: list[Any] = []
    numbers: dict[str, Any] = {}
    table = [
        "<table><tr><th>method</th><th>eager</th><th>--fast</th><th>time, fast / eager</th>"
        + "<th>max |fast - eager| / max |eager|</th></tr>"
    ]
    for row in rows:
        method = row["method"]
        pair = []
        for mode in ("eager", "fast"):
            image = overlay_image(
                f"fast_mode:{method}:{mode}",
                row[mode],
                alpha=ALPHA,
                css_width=WIDTH,
                caption=f"{method}, {mode}, class {target} {label(model, target)}",
                sign=ctx.sign,
                clip=ctx.clip,
            )
            images.append(image)
            pair.append(figure_html(image, width=WIDTH))
        parts.append(f'<div class="row">{"".join(pair)}</div>')
        ratio = row["fast_seconds"] / row["eager_seconds"] if row["eager_seconds"] else 0.0
        table.append(
            f"<tr><td>{html.escape(method)}</td><td>{1000 * row['eager_seconds']:.0f} ms</td>"
            + f"<td>{1000 * row['fast_seconds']:.0f} ms</td><td>{ratio:.2f}x</td>"
            + f"<td>{row['max_relative_difference']:.1e}</td></tr>"
        )
        numbers[method] = {
            "eager_seconds": row["eager_seconds"],
            "fast_seconds": row["fast_seconds"],
            "max_relative_difference": row["max_relative_difference"],
        }
    table.append("</table>")
    note = (
        "<p>The same maps with <code>--fast</code> (channels-last weights; batch norms "
        + "folded into their convolutions for input gradients), median of "
        + f"{TIMED_CALLS} calls on this machine. Fast mode changes the time, not the map: "
        + "the gap is float rounding.</p>"
    )
    fallbacks = (data["fast"] or {}).get("fallbacks", [])
    if fallbacks:  # what fast mode could not do on this model, and why
        items = "".join(f"<li>{html.escape(str(f))}</li>" for f in fallbacks)
        note += f"<p>Not used on this model:</p><ul>{items}</ul>"
    numbers["fallbacks"] = list(fallbacks)
    ctx.records["fast_mode"] = {"target": target, "fast": data["fast"], "alpha": ALPHA}
    return Fragment(note + "".join(table) + "".join(parts), images, numbers)


SECTION = ReportSection("fast_mode", "Fast mode next to eager mode", 85, compute, render)
