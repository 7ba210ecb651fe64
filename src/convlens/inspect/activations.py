"""Feature maps of a layer, strongest channels first.

A token layer ``(N, T, C)`` (a vision transformer's block) is shown as its patch grid
``(N, C, h, w)``: :func:`convlens.tokens.tokens_to_grid` drops the class and register tokens
(counted in the provenance) and infers the grid from ``T`` and the input's shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from convlens.hooks import capture, inference_context
from convlens.models.model import Batch, Model
from convlens.models.preprocess import map_to_original
from convlens.results import Result, make_provenance

__all__ = ["activations", "layer_activations", "representative_layers"]


def layer_activations(model: Model, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of ``layer`` for an input-space batch ``x`` (eval mode, no gradient)."""
    with inference_context(model.module), torch.no_grad(), capture(model.module, [layer]) as acts:
        model.module(x)
    return acts[layer].detach().clone()


def activations(
    model: Model, images: Any, layer: str, *, order_by: str = "mean", reshape: Any = None
) -> Result:
    """Feature maps of ``layer`` for images, with channels ranked by strength.

    Parameters
    ----------
    images
        Anything :meth:`Model.prepare` takes (paths, arrays, ``sample:NAME``) or a :class:`Batch`.
    layer
        Dotted layer name (``convlens layers`` lists them).
    order_by
        ``"mean"`` or ``"max"`` activation per channel, for the ranking.
    reshape
        For a token layer: the patch grid ``(h, w)`` (default: inferred).

    Returns
    -------
    Result
        Kind ``"activations"``: ``activations`` ``(N, C, h, w)``, ``channel_order``
        ``(N, C)`` (strongest first), ``channel_strength`` ``(N, C)``; the display map of
        each image is its strongest channel over the original image. A token layer's
        ``activations`` are its patch grid ``(N, C, h, w)``; ``params["tokens"]`` records
        the grid and the dropped tokens.
    """
    from convlens.tokens import tokens_to_grid

    batch = (
        images
        if isinstance(images, Batch)
        else model.prepare(
            images if isinstance(images, Sequence) and not isinstance(images, str) else [images]
        )
    )
    acts = layer_activations(model, batch.x, layer)
    params: dict[str, Any] = {"order_by": order_by}
    if acts.dim() == 3:
        grid, params["tokens"] = tokens_to_grid(
            acts, reshape, input_size=(int(batch.x.shape[-2]), int(batch.x.shape[-1]))
        )
        acts = grid.contiguous()
    flat = acts.flatten(2) if acts.dim() > 2 else acts[:, :, None]
    if order_by not in ("mean", "max"):
        from convlens.errors import BadInputError

        raise BadInputError(f"order_by={order_by!r}: choose 'mean' or 'max'")
    strength = flat.mean(dim=2) if order_by == "mean" else flat.max(dim=2).values
    order = strength.argsort(dim=1, descending=True)
    display = None
    if acts.dim() == 4:
        display = [
            map_to_original(acts[i, order[i, 0]].float().cpu(), g)
            for i, g in enumerate(batch.geometries)
        ]
    provenance = make_provenance(model, "activations", params=params, layer=layer)
    return Result(
        "activations",
        {"activations": acts, "channel_order": order, "channel_strength": strength},
        provenance,
        sources=batch.sources,
        display=display,
        originals=batch.originals,
    )


def representative_layers(model: Model, count: int = 3) -> list[str]:
    """``count`` layers with a spatial output, spread evenly from shallow to deep: what an
    overview of the feature maps shows (the report's activation grids).

    Leaf layers called once per forward, activations (``*Act*``, ``*ReLU*``) preferred; on a
    vision transformer (its CAM layer is a token layer ``(N, T, C)``), its blocks' token
    outputs (shown as patch grids), never attention probabilities. Fewer than ``count`` when
    the model has fewer; none when it has no spatial layer.
    """
    rows = [
        r
        for r in model.layers()
        if r.is_leaf and r.output_shape and len(r.output_shape) == 3 and r.calls == 1
    ]
    acts = [r.name for r in rows if "act" in r.type.lower() or "relu" in r.type.lower()] or [
        r.name for r in rows
    ]
    if _is_token_model(model):
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


def _is_token_model(model: Model) -> bool:
    """Whether the model's CAM layer is a token layer (N, T, C): a vision transformer."""
    from convlens.attribution.base import default_cam_layer
    from convlens.errors import ConvlensError

    try:
        shape = model.layer_info(default_cam_layer(model)).output_shape
    except ConvlensError:
        return False
    return shape is not None and len(shape) == 2
