"""Overlays: a coloured map blended over the image it explains.

Resizing here is for display only (bilinear, on the CPU); no gradient is ever computed.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.colors import Colormap
from PIL import Image

from convlens.errors import BadInputError
from convlens.render.colormaps import (
    _as_2d,
    _as_float_array,
    _rgba_from_normalized,
    is_signed_map,
)

__all__ = ["overlay", "resize_map", "to_uint8_image"]

ImageLike = np.ndarray | Image.Image | torch.Tensor

# Float pixels may stray this far outside [0, 1] (round-off) before we call them a mistake
# (e.g. a normalised input-space tensor passed instead of a pixel-space one).
_RANGE_SLACK = 1e-3


def to_uint8_image(x: ImageLike) -> np.ndarray:
    """Convert an image to an ``(H, W, 3)`` uint8 array.

    Parameters
    ----------
    x
        A PIL image (any mode); a numpy array ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or
        ``(H, W, 4)`` (alpha dropped), uint8 or float in [0, 1]; or a torch tensor channels
        first, ``(3, H, W)``, ``(1, H, W)``, ``(1, 3, H, W)`` or ``(H, W)``, float in [0, 1]
        (pixel space) or uint8. Grayscale is replicated to three channels.

    Returns
    -------
    numpy.ndarray
        uint8 ``(H, W, 3)``, a new array.

    Raises
    ------
    BadInputError
        If the shape or value range does not fit any of the above.
    """
    if isinstance(x, Image.Image):
        return np.array(x.convert("RGB"))
    if isinstance(x, torch.Tensor):
        return _tensor_to_uint8(x)
    if isinstance(x, np.ndarray):
        return _hwc_to_uint8(x, "image array")
    raise BadInputError(
        f"image of type {type(x).__name__} is not supported; pass a numpy array, PIL image or torch tensor"
    )


def _tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    t = x.detach().cpu()
    while t.ndim > 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 3:
        if t.shape[0] not in (1, 3):
            raise BadInputError(
                f"image tensor has shape {tuple(x.shape)}; expected channels first, (3, H, W) or (1, H, W)"
            )
        t = t.permute(1, 2, 0)
    if t.dtype != torch.uint8:
        t = t.to(torch.float64)  # numpy has no bfloat16; integers are checked against [0, 1]
    return _hwc_to_uint8(t.numpy(), "image tensor")


def _hwc_to_uint8(a: np.ndarray, what: str) -> np.ndarray:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise BadInputError(
            f"{what} has shape {tuple(a.shape)}; expected (H, W), (H, W, 3) or (H, W, 4) channels last"
        )
    a = a[:, :, :3]
    if a.dtype != np.uint8:
        a = _float_to_uint8(a.astype(np.float64), what)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.array(a, dtype=np.uint8)


def _float_to_uint8(a: np.ndarray, what: str) -> np.ndarray:
    if a.size and (np.nanmin(a) < -_RANGE_SLACK or np.nanmax(a) > 1 + _RANGE_SLACK):
        raise BadInputError(
            f"{what} has values in [{np.nanmin(a):.3g}, {np.nanmax(a):.3g}] but float pixels must be in [0, 1]; pass pixel space (not the normalised input tensor) or a uint8 array"
        )
    return np.rint(np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0).astype(np.uint8)


def resize_map(values: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D map bilinearly for display, keeping NaN regions NaN.

    NaN pixels are left out of the interpolation (normalised convolution: the resized values
    are divided by the resized validity mask), and an output pixel is NaN where less than half
    of its interpolation weight falls on valid pixels. Downscaling is antialiased (PIL).

    Parameters
    ----------
    values
        ``(H, W)`` map (leading size-1 axes are dropped), numpy or torch.
    size
        Output ``(height, width)``.

    Returns
    -------
    numpy.ndarray
        float32 ``(height, width)``.

    Raises
    ------
    BadInputError
        If the map is not 2-D or the size is not two positive integers.
    """
    v = _as_2d(_as_float_array(values))
    height, width = _check_size(size)
    if v.shape == (height, width):
        return v.astype(np.float32)
    valid = np.isfinite(v)
    filled = _pil_resize(np.where(valid, v, 0.0), (height, width))
    if valid.all():
        return filled
    weight = _pil_resize(valid.astype(np.float64), (height, width))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = filled / weight
    return np.where(weight >= 0.5, out, np.nan).astype(np.float32)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise BadInputError(f"size={size!r} is not a (height, width) pair of positive integers")
    return int(size[0]), int(size[1])


def _pil_resize(v: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = Image.fromarray(v.astype(np.float32))  # float32 -> mode "F"
    resized = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def overlay(
    image: ImageLike,
    heatmap: np.ndarray | torch.Tensor,
    *,
    alpha: float = 0.7,
    cmap: str | Colormap | None = None,
    sign: str | None = None,
    clip: float = 99.0,
    alpha_by_magnitude: bool = True,
    signed: bool | None = None,
) -> np.ndarray:
    """Blend a coloured heatmap over an image, by the rules of :mod:`convlens.render.display`.

    The part of the map the sign mode shows (``max(v, 0)``, ``max(-v, 0)``, ``|v|`` or ``v``)
    is resized to the image (bilinear, antialiased when shrinking, so a fine map is averaged
    onto a small picture), divided by the ``clip``-th percentile of its magnitude and clipped
    to [0, 1] (or [-1, 1] for ``"all"``), coloured, and blended:
    ``out = (1 - a) * image + a * colour`` with ``a = alpha * |u|`` at a pixel of scaled
    value ``u`` (``a = alpha`` with ``alpha_by_magnitude=False``) and ``a = 0`` where the map
    is NaN (so NaN regions show the image unchanged).

    Parameters
    ----------
    image
        The picture to draw on (see :func:`to_uint8_image` for accepted types); its size is
        the output size.
    heatmap
        ``(H, W)`` map of any size, numpy or torch; NaN means "no value here".
    alpha
        Opacity in [0, 1] of the strongest pixels.
    cmap
        Colormap name or object; None picks viridis, or the diverging map for ``"all"``.
    sign
        ``"positive"``, ``"absolute"``, ``"negative"`` or ``"all"``; None: ``"all"`` for a
        signed map, ``"positive"`` otherwise (per-method defaults:
        :func:`~convlens.render.display.result_overlay`).
    clip
        Percentile in (0, 100] of the shown magnitude drawn at full colour.
    alpha_by_magnitude
        Scale the opacity with the map (True), or blend every valid pixel with ``alpha``.
    signed
        Older spelling: True means ``sign="all"``, False ``sign="positive"`` (``sign`` wins).

    Returns
    -------
    numpy.ndarray
        uint8 ``(H, W, 3)`` at the image's size.

    Raises
    ------
    BadInputError
        If ``alpha``, ``sign`` or ``clip`` is invalid, or the image or map cannot be used.
    """
    from convlens.render.display import check_clip, check_sign, scale_shown, signed_part

    if not 0.0 <= alpha <= 1.0:
        raise BadInputError(f"alpha={alpha} is outside [0, 1]; use e.g. 0.5")
    check_clip(clip)
    base = to_uint8_image(image)
    heat = _as_2d(_as_float_array(heatmap), "heatmap")
    if sign is None:
        sign = (
            ("all" if is_signed_map(heat) else "positive")
            if signed is None
            else ("all" if signed else "positive")
        )
    shown = resize_map(signed_part(heat, check_sign(sign)), base.shape[:2]).astype(np.float64)
    scaled = scale_shown(shown, clip)
    rgba = _rgba_from_normalized(scaled, cmap, sign == "all")
    weight = alpha * (rgba[:, :, 3:] / 255.0)
    if alpha_by_magnitude:
        weight = weight * np.nan_to_num(np.abs(scaled))[:, :, None]
    blended = (1.0 - weight) * base + weight * rgba[:, :, :3]
    return np.rint(blended).astype(np.uint8)
