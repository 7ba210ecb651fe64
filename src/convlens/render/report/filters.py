"""Report section: the first convolution's filters (``convlens.inspect.filters``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convlens.render.report import (
    Fragment,
    ReportContext,
    ReportSection,
    SectionUnavailable,
    figure_html,
)
from convlens.render.report._common import png_image, result_provenance

if TYPE_CHECKING:
    from convlens.models.model import Model


def compute(model: Model, batch: Any, ctx: ReportContext) -> Any:
    from convlens.errors import ConvlensError
    from convlens.inspect import filters

    try:
        return filters(model)
    except ConvlensError as exc:
        raise SectionUnavailable(str(exc)) from None


def render(result: Any, model: Model, ctx: ReportContext) -> Fragment:
    from convlens.render.inspect import filters_mosaic

    prov = result_provenance(result)
    shape = tuple(result.tensors["weights"].shape)
    image = png_image(
        "filters",
        filters_mosaic(result),
        f"{prov.get('layer')}: weights {'x'.join(map(str, shape))}, shown as {prov['params']['mode']}",
        prov,
    )
    ctx.records["filters"] = {"layer": prov.get("layer"), "params": prov["params"]}
    return Fragment(figure_html(image), [image], {"layer": prov.get("layer"), "filters": shape[0]})


SECTION = ReportSection("filters", "First-layer filters", 20, compute, render)
