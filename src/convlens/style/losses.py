"""Perceptual losses of style transfer as engine objectives, and the default layers per model.

The losses are *penalties* (positive; smaller is closer), like the image priors
:func:`~convlens.optimize.objectives.total_variation`: the engine maximises
``-(alpha * content_loss + beta * style_loss) - tv * total_variation()`` (DESIGN.md,
"Objectives are maximised").

Each layer's loss is relative to its target, so layers of very different magnitude count
alike and the weights mean the same on every model:

- content (Gatys et al. 2016): ``L_c = mean_l ||F_l(x) - F_l(c)||^2 / ||F_l(c)||^2``;
- style: ``L_s = sum_l w_l ||G_l(x) - T_l||^2 / ||T_l||^2`` with ``G_l`` the Gram matrix of
  the (transformed) activations and ``T_l = sum_k a_k G_l(s_k)`` the weighted average over
  the style images ``s_k`` (weights ``a_k`` sum to one); with the mean/variance statistic the
  same relative distance is taken of the channel means and of the standard deviations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from convlens.errors import BadInputError
from convlens.hooks import capture, forward_until_captured, inference_context
from convlens.layers import resolve_layer
from convlens.optimize.objectives import Objective, ObjectiveContext
from convlens.results import Result, make_provenance
from convlens.style.gram import STATISTICS, gram_matrix, mean_variance, transform_features
from convlens.types import ModelProtocol

__all__ = [
    "DEFAULT_LAYERS",
    "StyleLayers",
    "content_loss",
    "default_layers",
    "layer_codes",
    "layer_statistics",
    "style_loss",
    "style_targets",
]

_EPS = 1e-12


@dataclass(frozen=True)
class StyleLayers:
    """The layers and statistics style transfer uses on one model.

    ``style`` maps each style layer to its weight; ``transform`` is the activation
    transform before the statistics (:data:`~convlens.style.gram.FEATURE_TRANSFORMS`).
    """

    content: tuple[str, ...]
    style: Mapping[str, float]
    transform: str = "none"
    statistic: str = "gram"


#: tuned per model (docs/features/style.md has the measurements behind them)
DEFAULT_LAYERS: dict[str, StyleLayers] = {
    "efficientnet_lite0": StyleLayers(
        content=("blocks.4",),
        style={
            "stem_act": 1.0,
            "blocks.1.expand_act": 1.0,
            "blocks.3.expand_act": 1.0,
            "blocks.5.expand_act": 1.0,
            "blocks.8.expand_act": 1.0,
        },
    ),
    # the classic choices of Gatys et al. 2016 on torchvision's VGG (conv1_1 ... conv5_1, conv4_2)
    "torchvision:vgg16": StyleLayers(
        content=("features.20",),
        style={
            "features.1": 1.0,
            "features.6": 1.0,
            "features.11": 1.0,
            "features.18": 1.0,
            "features.25": 1.0,
        },
    ),
    "torchvision:vgg19": StyleLayers(
        content=("features.22",),
        style={
            "features.1": 1.0,
            "features.6": 1.0,
            "features.11": 1.0,
            "features.20": 1.0,
            "features.29": 1.0,
        },
    ),
}


def default_layers(model: ModelProtocol) -> StyleLayers:
    """The tuned layers of a known model; otherwise one layer per resolution from the layer table.

    For an unknown model: the last layer at each of the first five strides (style) and the
    one at the third (content), which mirrors the VGG recipe on any CNN.
    """
    name = getattr(model, "name", None)
    if name in DEFAULT_LAYERS:
        return DEFAULT_LAYERS[name]
    by_stride: dict[float, str] = {}
    for info in model.layers():
        field = info.receptive_field
        if field is None or field.is_global or not info.name:
            continue
        by_stride[max(field.stride)] = info.name  # the deepest layer at each stride
    names = [by_stride[s] for s in sorted(by_stride)][:5]
    if not names:
        raise BadInputError(
            "could not pick style layers for this model: give content and style layers explicitly"
        )
    return StyleLayers(content=(names[min(2, len(names) - 1)],), style=dict.fromkeys(names, 1.0))


def layer_codes(
    model: ModelProtocol, pixels: torch.Tensor, layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The activations of ``layers`` for pixel-space images ``(B, C, H, W)``, detached.

    The forward pass stops at the deepest of them, so any image size works.
    """
    module = model.module
    for layer in layers:
        resolve_layer(module, layer)
    with (
        inference_context(module),
        torch.no_grad(),
        capture(module, list(layers), stop=True) as acts,
    ):
        forward_until_captured(module, model.normalize(pixels))
        return {name: acts[name].detach() for name in layers}


def _statistics(act: torch.Tensor, transform: str, statistic: str) -> tuple[torch.Tensor, ...]:
    act = transform_features(act, transform)
    if statistic == "gram":
        return (gram_matrix(act),)
    mean, var = mean_variance(act)
    return mean, var.clamp_min(0).sqrt()


def _check_statistic(statistic: str) -> str:
    if statistic not in STATISTICS:
        raise BadInputError(f"statistic {statistic!r}: choose one of {', '.join(STATISTICS)}")
    return statistic


def style_targets(
    model: ModelProtocol,
    styles: Sequence[torch.Tensor],
    layers: Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    transform: str = "none",
    statistic: str = "gram",
) -> dict[str, tuple[torch.Tensor, ...]]:
    """Per layer, the weighted average of the style images' statistics.

    ``styles`` are pixel-space images ``(1, C, H, W)`` (sizes may differ); ``weights`` (one
    per style, default equal) are normalised to sum to one.
    """
    _check_statistic(statistic)
    if not styles:
        raise BadInputError("give at least one style image")
    if weights is None:
        weights = [1.0] * len(styles)
    if len(weights) != len(styles):
        raise BadInputError(f"{len(weights)} style weights for {len(styles)} style images")
    if any(not isinstance(w, (int, float)) or w < 0 for w in weights) or sum(weights) <= 0:
        raise BadInputError(
            f"style weights must be numbers >= 0 with a positive sum, got {list(weights)}"
        )
    total = float(sum(weights))
    mixed: dict[str, list[torch.Tensor]] = {}
    for image, weight in zip(styles, weights):
        codes = layer_codes(model, image, layers)
        for layer in layers:
            stats = [
                s.mean(dim=0, keepdim=True) for s in _statistics(codes[layer], transform, statistic)
            ]
            acc = mixed.setdefault(layer, [torch.zeros_like(s) for s in stats])
            for k, s in enumerate(stats):
                acc[k] = acc[k] + (weight / total) * s
    return {layer: tuple(stats) for layer, stats in mixed.items()}


def _relative(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||x - t||^2 / ||t||^2`` per image."""
    diff = (x - target).flatten(1).pow(2).sum(dim=1)
    return diff / target.flatten(1).pow(2).sum(dim=1).clamp_min(_EPS)


def style_loss(
    targets: Mapping[str, tuple[torch.Tensor, ...]],
    layer_weights: Mapping[str, float] | None = None,
    *,
    transform: str = "none",
    statistic: str = "gram",
) -> Objective:
    """The style penalty ``sum_l w_l ||G_l(x) - T_l||^2 / ||T_l||^2`` (positive, per image)."""
    _check_statistic(statistic)
    weights = dict(layer_weights) if layer_weights is not None else dict.fromkeys(targets, 1.0)
    if set(weights) != set(targets):
        raise BadInputError(
            f"style layer weights {sorted(weights)} do not match the targets' layers {sorted(targets)}"
        )

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        total = ctx.image.new_zeros(ctx.batch)
        for layer, target in targets.items():
            stats = _statistics(ctx.act(layer), transform, statistic)
            total = total + weights[layer] * sum(_relative(s, t) for s, t in zip(stats, target))
        return total

    return Objective(
        fn,
        layers=tuple(targets),
        description=f"style_loss({len(targets)} layers, {statistic}, {transform})",
    )


def content_loss(codes: Mapping[str, torch.Tensor]) -> Objective:
    """The content penalty ``mean_l ||F_l(x) - F_l(c)||^2 / ||F_l(c)||^2`` (positive, per image)."""
    if not codes:
        raise BadInputError("content_loss needs at least one content layer")

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        return sum(_relative(ctx.act(layer), code) for layer, code in codes.items()) / len(codes)  # type: ignore[return-value]

    return Objective(fn, layers=tuple(codes), description=f"content_loss({', '.join(codes)})")


def layer_statistics(
    model: ModelProtocol, image: torch.Tensor, layer: str, *, transform: str = "none"
) -> Result:
    """The style statistics of one layer for one pixel-space image ``(1, C, H, W)``.

    Returns kind ``"gram"``: ``gram (C, C)`` (``F F^T / (C H W)``), ``mean (C,)`` and
    ``variance (C,)`` over positions, of the (transformed) activations.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[0] != 1:
        raise BadInputError("image: expected one pixel-space image (1, C, H, W)")
    act = transform_features(
        layer_codes(model, image.to(model.device, model.dtype), [layer])[layer], transform
    )
    mean, var = mean_variance(act)
    tensors = {"gram": gram_matrix(act)[0].cpu(), "mean": mean[0].cpu(), "variance": var[0].cpu()}
    params = {
        "transform": transform,
        "image_size": list(image.shape[-2:]),
        "channels": int(act.shape[1]),
    }
    return Result("gram", tensors, make_provenance(model, "gram", params=params, layer=layer))
