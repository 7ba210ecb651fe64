"""Filters as images: RGB kernels, kernels per input channel, FC weights as templates."""

from __future__ import annotations

import torch
from torch import nn

from convlens.errors import BadInputError
from convlens.models.model import Model
from convlens.results import Result, make_provenance

__all__ = ["filter_images", "filters"]


def _first_conv(model: Model) -> str:
    for name, m in model.module.named_modules():
        if isinstance(m, nn.Conv2d):
            return name
    for name, m in model.module.named_modules():
        if isinstance(m, nn.Linear):
            return name
    raise BadInputError(f"model {model.name} has no Conv2d or Linear layer to show")


def filter_images(
    model: Model, layer: str | None = None, *, scale: str = "layer"
) -> tuple[str, str, torch.Tensor, torch.Tensor]:
    """``(layer, mode, weights, images)`` for a conv or linear layer.

    Modes: ``"rgb"`` (a conv on the model's colour input: one RGB tile per filter),
    ``"channels"`` (any other conv: one grayscale tile per filter and input channel,
    ``(out * in, 1, k, k)``), ``"template"`` (a linear layer that sees the pixels: each
    output's weight row reshaped to the input image, ``(out, C, H, W)``).

    ``images`` are in [0, 1] with 0.5 for a zero weight: ``w / (2 max|w|) + 0.5``, with the
    maximum over the whole layer (``scale="layer"``, magnitudes comparable) or per tile
    (``scale="filter"``, every pattern visible).
    """
    name = layer or _first_conv(model)
    module = model.layer(name)
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        raise BadInputError(
            f"layer {name!r} is a {type(module).__name__}; filters are shown for Conv2d and Linear layers"
        )
    weights = module.weight.detach().float().cpu().clone()
    if isinstance(module, nn.Linear):
        c, (h, w) = model.channels, model.input_size
        if weights.shape[1] != c * h * w:
            raise BadInputError(
                f"linear layer {name!r} sees {weights.shape[1]} features, not the {c}x{h}x{w} input pixels, so its weights cannot be shown as images; pick a conv layer or a linear layer on pixels"
            )
        mode, tiles = "template", weights.view(-1, c, h, w)
    elif weights.shape[1] == model.channels == 3 and module.groups == 1:
        mode, tiles = "rgb", weights
    else:
        mode, tiles = "channels", weights.reshape(-1, 1, *weights.shape[-2:])
    if scale not in ("layer", "filter"):
        raise BadInputError(f"scale={scale!r}: choose 'layer' or 'filter'")
    if scale == "layer":
        peak = tiles.abs().max().clamp_min(1e-12)
    else:
        peak = tiles.abs().flatten(1).max(dim=1).values.clamp_min(1e-12).view(-1, 1, 1, 1)
    return name, mode, weights, tiles / (2 * peak) + 0.5


def filters(model: Model, layer: str | None = None, *, scale: str = "layer") -> Result:
    """The weights of a conv or linear layer as images (see :func:`filter_images`).

    Returns a :class:`~convlens.results.Result` of kind ``"filters"`` with tensors
    ``weights`` (raw) and ``filters`` (display tiles in [0, 1]).
    """
    name, mode, weights, images = filter_images(model, layer, scale=scale)
    provenance = make_provenance(
        model, "filters", params={"mode": mode, "scale": scale}, layer=name
    )
    return Result("filters", {"filters": images, "weights": weights}, provenance)
