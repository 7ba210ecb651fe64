"""Gram matrices of feature maps: the one implementation convlens uses.

For a layer's activation ``F`` of one image, ``C`` channels by ``N = H W`` positions (one row
per channel), the Gram matrix holds the channels' second moments over positions:

    G = F F^T / Z,   G_ij = sum_n F_in F_jn / Z

(Gatys, Ecker & Bethge, "Texture Synthesis Using Convolutional Neural Networks", 2015,
arXiv:1505.07376). The normaliser ``Z`` is the ``normalize`` parameter: style statistics
divide by ``C H W`` so the entries compare across layers and image sizes; the diversity
objective of feature visualisation divides by ``H W`` (Olah, Mordvintsev & Schubert 2017,
"Feature Visualization", Distill), a constant factor that its cosine similarity ignores.
"""

from __future__ import annotations

from typing import Literal

import torch

from convlens.errors import BadInputError

__all__ = ["GramNormalization", "gram_matrix"]

#: ``"chw"``: divide by channels x positions; ``"hw"``: by positions; ``"none"``: the raw sum
GramNormalization = Literal["chw", "hw", "none"]


def gram_matrix(features: torch.Tensor, *, normalize: GramNormalization = "chw") -> torch.Tensor:
    """``(B, C, *spatial)`` -> ``(B, C, C)``: ``F F^T / Z`` per image, one batched matmul.

    Parameters
    ----------
    features
        A batch of activations: ``(B, C, H, W)``, any number of spatial dimensions, or
        ``(B, C)`` (one position).
    normalize
        ``Z``: ``"chw"`` (``C`` times the number of positions), ``"hw"`` (the number of
        positions) or ``"none"`` (``Z = 1``).

    Raises
    ------
    BadInputError
        ``features`` is not a tensor with a batch and a channel dimension, or ``normalize``
        is unknown.
    """
    if not isinstance(features, torch.Tensor) or features.dim() < 2:
        shape = getattr(features, "shape", type(features).__name__)
        raise BadInputError(f"features: expected a (B, C, H, W) tensor, got {shape}")
    f = features.flatten(2) if features.dim() > 2 else features[:, :, None]
    c, n = f.shape[1], f.shape[2]
    scale = {"chw": c * n, "hw": n, "none": 1}.get(normalize)
    if scale is None:
        raise BadInputError(f"normalize={normalize!r}: choose 'chw', 'hw' or 'none'")
    gram = torch.bmm(f, f.transpose(1, 2))
    return gram / scale if scale != 1 else gram
