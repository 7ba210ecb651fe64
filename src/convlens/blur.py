"""Gaussian blur of image batches: the one implementation convlens uses.

Three uses with different conventions read this function: the blurred baseline of path
attributions and the blur fill of occlusion and LIME/SHAP (radius ``ceil(3 sigma)``, borders
repeated), the blur fill of deletion/insertion (radius ``ceil(3 sigma)``, borders mirrored)
and the periodic blur of feature visualisation (radius ``round(4 sigma)`` as
``scipy.ndimage.gaussian_filter``, borders mirrored; Yosinski, Clune, Nguyen, Fuchs & Lipson
2015, arXiv:1506.06579). The conventions are the ``radius`` and ``border`` parameters, so each
caller keeps exactly the blur it had.

The blur is separable: ``G_sigma * x`` is a 1-D convolution along the width, then one along the
height, with the kernel

    k[t] = exp(-t^2 / (2 sigma^2)) / sum_s exp(-s^2 / (2 sigma^2)),   t = -r..r.

Borders: ``"reflect"`` mirrors about the edge pixel without repeating it (``d c b | a b c d``;
torch's ``"reflect"``, scipy's ``"mirror"``) and ``"replicate"`` repeats the edge pixel
(``a a a | a b c``; scipy's ``"nearest"``). A mirrored border needs ``r < size``: along a
shorter side the kernel is cut to ``size - 1`` and renormalised, so a constant image stays
constant.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from convlens.errors import BadInputError

__all__ = ["Border", "gaussian_blur", "gaussian_kernel", "gaussian_radius"]

#: how the image is extended beyond its edges
Border = Literal["reflect", "replicate"]
_BORDERS = ("reflect", "replicate")


def gaussian_radius(sigma: float, truncate: float = 4.0, *, round_up: bool = False) -> int:
    """Half-width of the kernel: ``int(truncate sigma + 0.5)`` as scipy.ndimage, or
    ``ceil(truncate sigma)`` with ``round_up``."""
    span = truncate * sigma
    return math.ceil(span) if round_up else int(span + 0.5)


def gaussian_kernel(
    sigma: float,
    radius: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The normalised 1-D kernel ``(2 radius + 1,)``, computed in float64 and then cast."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(device=device, dtype=dtype)


def gaussian_blur(
    x: torch.Tensor,
    sigma: float,
    *,
    radius: int | None = None,
    border: Border = "reflect",
) -> torch.Tensor:
    """Blur every channel of ``(N, C, H, W)`` with a Gaussian of ``sigma`` pixels.

    Parameters
    ----------
    x
        The batch (any floating dtype; the result has the same dtype and device).
    sigma
        Standard deviation in pixels; ``0`` returns a copy of ``x``.
    radius
        Kernel half-width; default :func:`gaussian_radius` ``(sigma)`` (``4 sigma``, rounded).
    border
        ``"reflect"`` (mirror, edge not repeated) or ``"replicate"`` (edge repeated).

    Returns
    -------
    torch.Tensor
        A new tensor shaped like ``x``.

    Raises
    ------
    BadInputError
        ``x`` is not 4-D, ``sigma`` is negative or not a number, or ``border`` is unknown.
    """
    if x.dim() != 4:
        raise BadInputError(f"blur: expected an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    if not sigma >= 0:
        raise BadInputError(f"blur sigma={sigma}: the standard deviation must be >= 0 pixels")
    if border not in _BORDERS:
        raise BadInputError(f"blur border={border!r}: choose {' or '.join(_BORDERS)}")
    if sigma == 0:
        return x.clone()
    r = gaussian_radius(sigma) if radius is None else int(radius)
    kernel = gaussian_kernel(sigma, r, dtype=torch.float64)
    c = x.shape[1]
    out = x
    for dim in (-1, -2):  # width, then height
        size = x.shape[dim]
        # a mirrored border cannot reach past the opposite edge: cut the kernel there
        pad = min(r, size - 1) if border == "reflect" else r
        k = kernel[r - pad : r + pad + 1]
        k = (k / k.sum()).to(device=x.device, dtype=x.dtype)
        shape = (c, 1, 1, 2 * pad + 1) if dim == -1 else (c, 1, 2 * pad + 1, 1)
        padding = (pad, pad, 0, 0) if dim == -1 else (0, 0, pad, pad)
        padded = F.pad(out, padding, mode=border) if pad else out
        weight = k.reshape(1, 1, *shape[2:]).expand(shape).contiguous()
        out = F.conv2d(padded, weight, groups=c)
    return out
