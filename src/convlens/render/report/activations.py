"""Report section: feature maps of three layers, shallow to deep, strongest channels first
(:func:`convlens.inspect.representative_layers`, :func:`convlens.inspect.activations`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convlens.render.report import (
    Fragment,
    ReportContext,
    ReportImage,
    ReportSection,
    SectionUnavailable,
    figure_html,
)
from convlens.render.report._common import LOSSY, result_provenance

if TYPE_CHECKING:
    from convlens.models.model import Model


def compute(model: Model, batch: Any, ctx: ReportContext) -> list[Any]:
    from convlens.inspect import activations, representative_layers

    layers = representative_layers(model)
    if not layers:
        raise SectionUnavailable("the model has no layer with a spatial (C, h, w) output")
    return [activations(model, batch, layer) for layer in layers]


def render(results: list[Any], model: Model, ctx: ReportContext) -> Fragment:
    from convlens.render.figures import MEDIA_TYPES, figure_to_bytes
    from convlens.render.inspect import activations_figure

    layers = [r.layer for r in results]
    max_channels = 32 if ctx.full else 16
    images = []
    for layer, result in zip(layers, results):
        prov = {
            **result_provenance(result),
            "render": {
                "function": "activations_figure",
                "max_channels": max_channels,
                "dpi": 100,
                **LOSSY,
            },
        }
        png = figure_to_bytes(
            activations_figure(result, 0, max_channels=max_channels),
            dpi=100,
            fmt=LOSSY["format"],
            quality=LOSSY["quality"],
        )
        shape = tuple(result.tensors["activations"].shape[1:])
        images.append(
            ReportImage(
                f"activations:{layer}",
                png,
                f"{layer}: output {shape}, {min(max_channels, shape[0])} strongest channels",
                prov,
                MEDIA_TYPES[LOSSY["format"]],
            )
        )
    ctx.records["activations"] = {
        "layers": layers,
        "max_channels": max_channels,
        "order_by": "mean",
    }
    return Fragment("".join(figure_html(i, width=520) for i in images), images, {"layers": layers})


SECTION = ReportSection("activations", "Activation grids", 30, compute, render)
