"""Feature statistics that describe style: Gram matrices and channel means/variances.

The Gram matrix of a layer's feature map ``F`` (``C`` channels, ``N = H W`` positions, one
row per channel) is the channels' second moments, with every position counted alike:

    G = F F^T / (C H W)

(Gatys, Ecker & Bethge, "Texture Synthesis Using Convolutional Neural Networks", 2015,
arXiv:1505.07376; "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016).
Dividing by ``C H W`` makes the entries comparable across image sizes and layers
(:func:`convlens.gram.gram_matrix`, re-exported here, with its default ``normalize="chw"``).
The course notes' lighter alternative keeps only each channel's mean and variance
(``mu_c = mean_n F_cn``, ``sigma^2_c = var_n F_cn``; the statistics AdaIN matches: Huang &
Belongie 2017, arXiv:1703.06868).

Before the statistics, a layer's activations may be *transformed*. Gram-matrix style on
networks other than VGG is weak and noisy because a few channels with very large
activations dominate the Gram matrix (Wang, Li, Vasconcelos & Prakash, "Rethinking and
Improving the Robustness of Image Style Transfer", CVPR 2021, arXiv:2104.05623). Their
remedy is a softmax over the activations, which bounds every value and flattens the peaks.
``"softmax"`` here applies it over the channels at each position (times ``C``, so a flat
vector stays all ones): ``sigma(F)_cn = C exp(F_cn) / sum_k exp(F_kn)``;
``"channel_norm"`` divides each channel by its root-mean-square, so every channel
counts alike. :data:`FEATURE_TRANSFORMS` lists them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from convlens.errors import BadInputError
from convlens.gram import gram_matrix  # normalised by C H W, as below

__all__ = ["FEATURE_TRANSFORMS", "STATISTICS", "gram_matrix", "mean_variance", "transform_features"]

_EPS = 1e-8


def _check_features(features: torch.Tensor) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.dim() != 4:
        raise BadInputError(
            f"features: expected a (B, C, H, W) tensor, got {getattr(features, 'shape', type(features).__name__)}"
        )
    return features


def mean_variance(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, H, W)`` -> channel means and (biased) variances over positions, each ``(B, C)``."""
    f = _check_features(features).flatten(2)
    return f.mean(dim=2), f.var(dim=2, unbiased=False)


def _softmax(features: torch.Tensor) -> torch.Tensor:
    # over the channels at each position, times C so a flat vector is all ones
    return torch.softmax(features, dim=1) * features.shape[1]


def _channel_norm(features: torch.Tensor) -> torch.Tensor:
    rms = features.pow(2).mean(dim=(2, 3), keepdim=True).sqrt().clamp_min(_EPS)
    return features / rms


#: name -> transform applied to a layer's activations before the statistics
FEATURE_TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda f: f,
    "softmax": _softmax,
    "channel_norm": _channel_norm,
}

#: the style statistics a layer can be described by
STATISTICS = ("gram", "mean_variance")


def transform_features(features: torch.Tensor, transform: str) -> torch.Tensor:
    """Apply one of :data:`FEATURE_TRANSFORMS` (by name) to ``(B, C, H, W)`` activations."""
    try:
        fn = FEATURE_TRANSFORMS[transform]
    except KeyError:
        raise BadInputError(
            f"feature transform {transform!r}: choose one of {', '.join(FEATURE_TRANSFORMS)}"
        ) from None
    return fn(_check_features(features))
