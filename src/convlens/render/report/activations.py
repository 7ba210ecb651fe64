"""Report section: feature maps of three layers, shallow to deep, strongest channels first."""

from __future__ import annotations

from typing import Any

from convlens.render.report import (
    Fragment,
    ReportContext,
    ReportImage,
    ReportSection,
    SectionUnavailable,
    figure_html,
)
from convlens.render.report._common import LOSSY, result_provenance


def activation_layers(model: Any, count: int = 3) -> list[str]:
    """``count`` activation layers with a spatial output, spread over the depth (called once each)."""
    rows = [
        r
        for r in model.layers()
        if r.is_leaf and r.output_shape and len(r.output_shape) == 3 and r.calls == 1
    ]
    acts = [r.name for r in rows if "act" in r.type.lower() or "relu" in r.type.lower()] or [
        r.name for r in rows
    ]
    if _is_token_model(
        model
    ):  # a ViT: its blocks' token outputs (shown as patch grids), not attention probabilities
        acts = [
            r.name
            for r in model.layers()
            if not r.is_leaf
            and r.calls == 1
            and r.output_shape
            and len(r.output_shape) == 2
            and r.name.rsplit(".", 1)[-1].isdigit()
        ] or acts
    if not acts:
        return []
    picks = [
        acts[min(len(acts) - 1, k * (len(acts) - 1) // max(1, count - 1))] for k in range(count)
    ]
    return list(dict.fromkeys(picks))


def _is_token_model(model: Any) -> bool:
    """Whether the model's CAM layer is a token layer (N, T, C): a vision transformer."""
    from convlens.attribution.base import default_cam_layer
    from convlens.errors import ConvlensError

    try:
        shape = model.layer_info(default_cam_layer(model)).output_shape
    except ConvlensError:
        return False
    return shape is not None and len(shape) == 2


def build(model: Any, batch: Any, ctx: ReportContext) -> Fragment:
    from convlens.inspect import activations
    from convlens.render.figures import MEDIA_TYPES, figure_to_bytes
    from convlens.render.inspect import activations_figure

    layers = activation_layers(model)
    if not layers:
        raise SectionUnavailable("the model has no layer with a spatial (C, h, w) output")
    max_channels = 32 if ctx.full else 16
    images = []
    for layer in layers:
        result = activations(model, batch, layer)
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


SECTION = ReportSection("activations", "Activation grids", 30, build)
