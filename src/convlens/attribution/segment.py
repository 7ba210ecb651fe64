"""Segmentation for free: a class saliency map seeds GrabCut, which returns an object mask.

Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks", ICLR workshop 2014,
arXiv:1312.6034, Sec. 3.1 (weakly supervised object localisation): the saliency map
``M = max_c |dS/dx|`` is thresholded at quantiles of its own distribution; pixels above the
``fg_quantile`` (95 %) seed the foreground colour model, pixels below the ``bg_quantile``
(30 %) the background one, and GrabCut (Rother, Kolmogorov & Blake 2004: Gaussian mixture
colour models + graph cut) labels the rest. The mask is the largest connected component
of the foreground, as in the paper.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from convlens.attribution.base import register_method
from convlens.errors import BadInputError, MissingDependencyError
from convlens.inspect.gradients import input_gradient
from convlens.models.model import Model
from convlens.targets import TargetLike

__all__ = ["foreground_fraction", "grabcut_seeds", "segment"]

#: OpenCV's GrabCut labels (cv2.GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD), fixed by its API
GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD = 0, 1, 2, 3


@register_method(
    "segment",
    output="cam",
    reduce="max_abs",
    paper="Simonyan, Vedaldi & Zisserman 2014, arXiv:1312.6034, Sec. 3.1",
)
def segment(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    saliency: torch.Tensor | None = None,
    fg_quantile: float = 0.95,
    bg_quantile: float = 0.3,
    iterations: int = 5,
    largest_component: bool = True,
) -> torch.Tensor:
    """Object masks from class saliency and GrabCut ("segmentation for free").

    Simonyan et al. 2014, arXiv:1312.6034, Sec. 3.1. Per image: ``M = max_c |dS_c/dx|``
    (or the given ``saliency``); pixels with ``M`` above its ``fg_quantile`` are definite
    foreground, below its ``bg_quantile`` definite background, the rest probable
    background; OpenCV's ``cv2.grabCut`` (``GC_INIT_WITH_MASK``, ``iterations``) runs on the
    8-bit pixel-space image (``model.denormalize(x)``). OpenCV's random generator (k-means
    initialisation of the colour models) is reseeded with 0 before each image, so the
    result is deterministic and a batch equals its items one by one.

    Parameters
    ----------
    saliency
        Optional precomputed maps ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, C, H, W)``
        (reduced with ``max |.|`` over channels); default: the saliency gradient of ``target``.
    fg_quantile, bg_quantile
        Quantiles of each image's saliency that bound the foreground and background seeds
        (``0 <= bg_quantile < fg_quantile <= 1``).
    iterations
        GrabCut iterations.
    largest_component
        Keep only the largest 8-connected foreground component (the paper's last step).

    Returns
    -------
    Tensor
        ``(N, 1, H, W)`` float masks, 1 = object, on ``x``'s device. An image whose
        saliency is flat (no pixel above the foreground quantile) gets an empty mask.

    Raises
    ------
    BadInputError
        Quantiles out of order, a saliency of the wrong shape, an image that is not
        RGB or grayscale.
    MissingDependencyError
        ``opencv-python-headless`` is not installed.
    """
    cv2 = _cv2()
    if not 0 <= bg_quantile < fg_quantile <= 1:
        raise BadInputError(
            f"fg_quantile={fg_quantile}, bg_quantile={bg_quantile}: need 0 <= bg_quantile < fg_quantile <= 1"
        )
    if iterations < 1:
        raise BadInputError(
            f"iterations={iterations!r}: pass a positive number of GrabCut iterations"
        )
    maps = _saliency_maps(model, x, target, saliency)
    images = _to_uint8(model, x)
    masks = []
    for image, m in zip(images, maps.double().cpu().numpy()):
        seeds = grabcut_seeds(m, fg_quantile, bg_quantile)
        masks.append(_grabcut(cv2, image, seeds, iterations, largest_component))
    out = torch.from_numpy(np.stack(masks)).to(x.device, x.dtype)
    return out.unsqueeze(1)


def grabcut_seeds(
    saliency: np.ndarray, fg_quantile: float = 0.95, bg_quantile: float = 0.3
) -> np.ndarray:
    """GrabCut's initial labels from one ``(H, W)`` saliency map (uint8 ``GC_*`` values).

    With ``hi``, ``lo`` the map's ``fg_quantile`` and ``bg_quantile``: ``s >= hi`` (and
    ``s > lo``) is definite foreground, ``s <= lo`` definite background, the rest probable
    background (GrabCut decides it). Ties at a quantile go to the seed, so a map that is
    zero almost everywhere still seeds its non-zero part; a flat map seeds no foreground.
    """
    hi, lo = np.quantile(saliency, [fg_quantile, bg_quantile])
    seeds = np.full(saliency.shape, GC_PR_BGD, dtype=np.uint8)
    seeds[saliency <= lo] = GC_BGD
    seeds[(saliency >= hi) & (saliency > lo)] = GC_FGD
    return seeds


def _grabcut(
    cv2, image: np.ndarray, seeds: np.ndarray, iterations: int, largest_component: bool
) -> np.ndarray:
    fg = (seeds == GC_FGD) | (seeds == GC_PR_FGD)
    bg = (seeds == GC_BGD) | (seeds == GC_PR_BGD)
    if not fg.any():
        return np.zeros(seeds.shape, dtype=np.float32)
    if not bg.any():
        return np.ones(seeds.shape, dtype=np.float32)
    mask = seeds.copy()
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # k-means++ initialisation of the colour models draws from OpenCV's RNG
    mask, _, _ = cv2.grabCut(
        image, mask, None, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK
    )
    object_mask = ((mask == GC_FGD) | (mask == GC_PR_FGD)).astype(np.uint8)
    if largest_component and object_mask.any():
        count, labels, stats, _ = cv2.connectedComponentsWithStats(object_mask, connectivity=8)
        if count > 2:
            biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            object_mask = (labels == biggest).astype(np.uint8)
    return object_mask.astype(np.float32)


def _saliency_maps(
    model: Model, x: torch.Tensor, target: TargetLike, saliency: torch.Tensor | None
) -> torch.Tensor:
    n, _, h, w = x.shape
    if saliency is None:
        grad = input_gradient(model, x, target)
        return grad.abs().amax(dim=1)
    if not isinstance(saliency, torch.Tensor):
        raise BadInputError(f"saliency must be a tensor (N, H, W), not {type(saliency).__name__}")
    s = saliency.detach()
    if s.dim() == 4:
        s = s.abs().amax(dim=1)
    if tuple(s.shape) != (n, h, w):
        raise BadInputError(
            f"saliency has shape {tuple(saliency.shape)} but x is {tuple(x.shape)}; pass one (H, W) map per image"
        )
    return s


def _to_uint8(model: Model, x: torch.Tensor) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 pixel-space images (grayscale repeated to three channels)."""
    channels = x.shape[1]
    if channels not in (1, 3):
        raise BadInputError(f"segment needs RGB or grayscale images; x has {channels} channels")
    pixels = model.denormalize(x.detach()).clamp(0, 1)
    if channels == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    as_bytes = torch.round(pixels * 255).to(torch.uint8).permute(0, 2, 3, 1)
    return np.ascontiguousarray(as_bytes.cpu().numpy())


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "segment needs OpenCV: pip install opencv-python-headless"
        ) from exc
    return cv2


def foreground_fraction(mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``(N, H, W)`` object masks (``segment``'s maps) -> ``(N,)``: the share of each image's
    pixels in the object (mask above ``threshold``)."""
    return (mask.detach() > threshold).flatten(1).float().mean(dim=1)
