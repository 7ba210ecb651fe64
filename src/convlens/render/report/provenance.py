"""Report section: provenance -- model, weights hash, versions and every section's parameters."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from convlens.render.report import Fragment, ReportContext, ReportSection
from convlens.render.report._common import esc

if TYPE_CHECKING:
    from convlens.models.model import Model


def compute(model: Model, batch: Any, ctx: ReportContext) -> dict[str, Any]:
    return model.provenance()


def render(info: dict[str, Any], model: Model, ctx: ReportContext) -> Fragment:
    rows = [
        ("model", info["model"]),
        ("weights sha256", info["weights_sha256"]),
        ("input size", "x".join(map(str, info["input_size"]))),
        *((f"{k} version", v) for k, v in info["versions"].items()),
        ("image", ctx.source),
        ("seed", ctx.seed),
        ("settings", "full" if ctx.full else "quick"),
    ]
    table = "".join(
        f"<tr><th>{esc(str(k))}</th><td><code>{esc(str(v))}</code></td></tr>" for k, v in rows
    )
    params = esc(json.dumps(ctx.records, indent=1, default=str))
    html = f'<table class="provenance">{table}</table><h3>Parameters of each section</h3><pre class="parameters">{params}</pre>'
    record = {
        **{k: v for k, v in info.items() if k != "time"},
        "source": ctx.source,
        "seed": ctx.seed,
        "full": ctx.full,
        "sections": dict(ctx.records),
    }
    return Fragment(html, [], record)


SECTION = ReportSection("provenance", "Provenance", 90, compute, render)
