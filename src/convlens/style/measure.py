"""Numbers that say how well an image took a style, kept its content, or copied a texture.

They are meant to be read on a model the optimisation never saw (e.g. optimise with
efficientnet_lite0, measure with efficientnet_lite1), with plain Gram matrices, so a
method cannot score well by exploiting its own network or its own feature transform.

- :func:`gram_distance`: ``mean_l ||G_l(x) - G_l(s)||_F / ||G_l(s)||_F`` over the
  measuring layers (plain Gram matrices, no transform).
- :func:`content_correlation`: Pearson correlation of the flattened activations of ``x``
  and the content image at one middle layer.
- :func:`max_patch_correlation`: the largest normalised cross-correlation between any
  ``p x p`` patch of a synthesised texture and any patch of the sample (1.0 = a copied patch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from convlens.errors import BadInputError
from convlens.style.gram import gram_matrix
from convlens.style.losses import layer_codes
from convlens.types import ModelProtocol

__all__ = [
    "content_correlation",
    "content_layer",
    "gram_distance",
    "max_patch_correlation",
    "measure_layers",
]

_ACTIVATIONS = ("ReLU", "ReLU6", "LeakyReLU", "SiLU", "GELU", "Hardswish", "ELU")


def measure_layers(model: ModelProtocol, count: int = 4) -> list[str]:
    """One activation layer per resolution: the last at each of the first ``count`` strides.

    Four strides (2 to 16 on an ImageNet CNN) mirror Gatys et al.'s conv1_1 ... conv4_1:
    the deepest, stride-32 layers describe objects more than style.
    """
    by_stride: dict[float, str] = {}
    for info in model.layers():
        field = info.receptive_field
        if field is None or field.is_global or info.type not in _ACTIVATIONS:
            continue
        by_stride[max(field.stride)] = info.name
    names = [by_stride[s] for s in sorted(by_stride)][:count]
    if not names:
        raise BadInputError(
            "no activation layers with a receptive field: give the measuring layers explicitly"
        )
    return names


def content_layer(model: ModelProtocol) -> str:
    """The measuring layer at stride 16 (or the deepest below it): a middle layer."""
    layers = measure_layers(model, count=4)
    return layers[-1]


def gram_distance(
    model: ModelProtocol,
    images: torch.Tensor,
    reference: torch.Tensor,
    layers: Sequence[str] | None = None,
) -> torch.Tensor:
    """Per image of ``images (B, C, H, W)``: mean relative Frobenius distance of its Gram
    matrices to those of ``reference (1, C, H', W')`` (sizes may differ)."""
    layers = list(layers) if layers is not None else measure_layers(model)
    x = layer_codes(model, images.to(model.device, model.dtype), layers)
    r = layer_codes(model, reference.to(model.device, model.dtype), layers)
    total = torch.zeros(images.shape[0])
    for layer in layers:
        gx, gr = gram_matrix(x[layer]), gram_matrix(r[layer])[:1]
        total += (
            (gx - gr).flatten(1).norm(dim=1) / gr.flatten(1).norm(dim=1).clamp_min(1e-12)
        ).cpu()
    return total / len(layers)


def content_correlation(
    model: ModelProtocol, images: torch.Tensor, content: torch.Tensor, layer: str | None = None
) -> torch.Tensor:
    """Per image: Pearson correlation of its activations at ``layer`` with the content's.

    ``images`` and ``content`` must have the same size (the maps are compared position by
    position).
    """
    if images.shape[-2:] != content.shape[-2:]:
        raise BadInputError(
            f"content_correlation needs images of the content's size {tuple(content.shape[-2:])}, got {tuple(images.shape[-2:])}"
        )
    layer = layer or content_layer(model)
    a = layer_codes(model, images.to(model.device, model.dtype), [layer])[layer].flatten(1)
    b = layer_codes(model, content.to(model.device, model.dtype), [layer])[layer].flatten(1)[:1]
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return ((a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)).cpu()


def max_patch_correlation(
    texture: torch.Tensor, sample: torch.Tensor, patch: int = 32, stride: int = 8
) -> float:
    """Largest normalised cross-correlation between a ``patch x patch`` patch of ``texture``
    (taken every ``stride`` pixels) and a patch of ``sample`` at any position.

    Both ``(1, C, H, W)`` (or ``(C, H, W)``) in [0, 1]. Each patch is centred and scaled to
    unit norm over all its channels, so 1.0 means the texture contains an exact copy (up to
    brightness and contrast) of a piece of the sample. Any copied region of at least
    ``patch + stride`` pixels on a side contains one of the texture patches, so it is found.
    """
    t = texture if texture.dim() == 4 else texture[None]
    s = sample if sample.dim() == 4 else sample[None]
    if min(t.shape[-2:]) < patch or min(s.shape[-2:]) < patch:
        raise BadInputError(f"both images must be at least {patch} px on each side")
    t, s = t[:1].float().cpu(), s[:1].float().cpu()
    queries = _unit_patches(F.unfold(t, patch, stride=stride)[0].T)  # (P, C p p)
    best = -1.0
    rows = 16  # sample positions are taken a strip of rows at a time, to bound memory
    for y0 in range(0, s.shape[-2] - patch + 1, rows):
        strip = s[:, :, y0 : y0 + rows + patch - 1]
        keys = _unit_patches(F.unfold(strip, patch, stride=1)[0].T)
        best = max(best, float((queries @ keys.T).max()))
    return best


def _unit_patches(patches: torch.Tensor) -> torch.Tensor:
    patches = patches - patches.mean(dim=1, keepdim=True)
    return patches / patches.norm(dim=1, keepdim=True).clamp_min(1e-12)
