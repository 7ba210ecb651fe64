"""Colormaps and map normalisation: turn a 2-D map of numbers into RGBA pixels.

Unsigned maps (saliency magnitude, CAMs, activations) are scaled to [0, 1] and drawn with a
perceptually uniform map (viridis by default). Signed maps (raw gradients, input x gradient)
are scaled to [-1, 1] so that 0 stays 0, and drawn with a blue-white-red diverging map whose
white centre is 0. Scaling divides by a high percentile rather than the maximum, so a few
extreme pixels do not wash out the rest (the usual practice for saliency maps, see Smilkov
et al. 2017, "SmoothGrad", section 3).

NaN marks "no value here" (for example the part of the original image outside the model's
crop): it stays NaN through normalisation and becomes fully transparent when coloured.
"""

from __future__ import annotations

import difflib

import matplotlib as mpl
import numpy as np
import torch
from matplotlib.colors import Colormap

from convlens.errors import BadInputError

__all__ = [
    "COLORBLIND_CMAP",
    "DEFAULT_CMAP",
    "DIVERGING_CMAP",
    "apply_colormap",
    "get_cmap",
    "is_signed_map",
    "normalize_map",
]

DEFAULT_CMAP = "viridis"
"""Perceptually uniform map for unsigned maps."""
DIVERGING_CMAP = "RdBu_r"
"""Blue (negative) - white (0) - red (positive) map for signed maps."""
COLORBLIND_CMAP = "cividis"
"""Map readable with red-green colour blindness."""

# convlens names on top of matplotlib's own; any matplotlib name works too.
_ALIASES = {"diverging": DIVERGING_CMAP, "default": DEFAULT_CMAP, "colorblind": COLORBLIND_CMAP}

# A map counts as signed when its smaller side (negative or positive extent) is at least this
# fraction of the larger side, so float round-off below zero in a ReLU map stays unsigned.
_SIGNED_FRACTION = 0.01


def get_cmap(cmap: str | Colormap | None = None) -> Colormap:
    """Look up a colormap by convlens or matplotlib name.

    Parameters
    ----------
    cmap
        ``"viridis"``, ``"diverging"``, ``"cividis"``, ``"gray"``, ``"magma"``, ``"inferno"``,
        any matplotlib colormap name, or a matplotlib ``Colormap``. None gives viridis.

    Returns
    -------
    matplotlib.colors.Colormap

    Raises
    ------
    BadInputError
        If the name is not known; the message suggests close names.
    """
    if isinstance(cmap, Colormap):
        return cmap
    name = DEFAULT_CMAP if cmap is None else _ALIASES.get(cmap, cmap)
    if not isinstance(name, str) or name not in mpl.colormaps:
        known = [*_ALIASES, *mpl.colormaps]
        close = difflib.get_close_matches(str(cmap), known, n=3)
        hint = (
            f"did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else "use e.g. 'viridis', 'diverging' or 'cividis'"
        )
        raise BadInputError(f"unknown colormap {cmap!r}; {hint}")
    return mpl.colormaps[name]


def _as_float_array(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of a numpy array or torch tensor (any device, detached)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()  # cast on CPU: MPS has no float64
    return np.array(values, dtype=np.float64)


def _as_2d(values: np.ndarray, what: str = "map") -> np.ndarray:
    """Drop leading size-1 axes (``(1, 1, H, W)`` -> ``(H, W)``); refuse anything else."""
    while values.ndim > 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2:
        raise BadInputError(
            f"{what} has shape {tuple(values.shape)} but a 2-D (H, W) map is needed; reduce the channels first (e.g. abs().amax over the channel axis)"
        )
    return values


def _check_percentile(clip_percentile: float) -> None:
    if not 0 < clip_percentile <= 100:
        raise BadInputError(f"clip_percentile={clip_percentile} is outside (0, 100]; use e.g. 99.5")


def is_signed_map(values: np.ndarray | torch.Tensor) -> bool:
    """Whether a map has both negative and positive values of non-trivial size.

    The smaller of the negative and positive extents must be at least 1 % of the larger one,
    so tiny round-off values below zero do not make an unsigned map signed. NaN is ignored.

    Parameters
    ----------
    values
        The map (numpy or torch, any shape).

    Returns
    -------
    bool
    """
    v = _as_float_array(values)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return False
    low, high = -float(finite.min()), float(finite.max())
    return low > 0 and high > 0 and min(low, high) >= _SIGNED_FRACTION * max(low, high)


def normalize_map(
    values: np.ndarray | torch.Tensor,
    *,
    signed: bool | None = None,
    clip_percentile: float = 99.5,
) -> np.ndarray:
    """Scale a map to [0, 1] (unsigned) or [-1, 1] (signed) robustly to outliers.

    Unsigned maps whose values are all >= 0 are divided by their ``clip_percentile``-th
    percentile (so 0 stays 0); unsigned maps with negative values are scaled min-to-percentile.
    Signed maps are divided by the percentile of ``|values|`` so the sign is kept and 0 stays
    0. Values beyond the percentile are clipped. If the percentile is 0 (a sparse map), the
    maximum is used instead; an all-constant zero-range map gives zeros, never NaN.

    Parameters
    ----------
    values
        The map (numpy or torch, any shape). NaN entries stay NaN.
    signed
        True for [-1, 1], False for [0, 1], None to decide with :func:`is_signed_map`.
    clip_percentile
        Percentile in (0, 100] that maps to 1 (or to +-1 for signed maps).

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``values``.

    Raises
    ------
    BadInputError
        If ``clip_percentile`` is outside (0, 100].
    """
    _check_percentile(clip_percentile)
    v = _as_float_array(values)
    if signed is None:
        signed = is_signed_map(v)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return np.where(np.isnan(v), np.nan, 0.0).astype(np.float32)
    with np.errstate(invalid="ignore"):  # inf - inf where the map holds inf; clipped below
        out = (
            _scale_signed(v, finite, clip_percentile)
            if signed
            else _scale_unsigned(v, finite, clip_percentile)
        )
    return out.astype(np.float32)


def _scale_signed(v: np.ndarray, finite: np.ndarray, clip_percentile: float) -> np.ndarray:
    magnitude = np.abs(finite)
    scale = float(np.percentile(magnitude, clip_percentile))
    if scale <= 0:
        scale = float(magnitude.max())
    if scale <= 0:
        return np.where(np.isnan(v), np.nan, 0.0)
    return np.clip(v / scale, -1.0, 1.0)


def _scale_unsigned(v: np.ndarray, finite: np.ndarray, clip_percentile: float) -> np.ndarray:
    # 0 means "nothing" in a non-negative map, so it stays the bottom of the scale.
    low = 0.0 if finite.min() >= 0 else float(finite.min())
    high = float(np.percentile(finite, clip_percentile))
    if high <= low:
        high = float(finite.max())
    if high <= low:
        return np.where(np.isnan(v), np.nan, 0.0)
    return np.clip((v - low) / (high - low), 0.0, 1.0)


def _rgba_from_normalized(
    normalized: np.ndarray, cmap: str | Colormap | None, signed: bool
) -> np.ndarray:
    """Colour an already normalised map; NaN becomes alpha 0. Returns uint8 (..., 4)."""
    colormap = get_cmap(DIVERGING_CMAP if cmap is None and signed else cmap)
    unit = (normalized + 1.0) / 2.0 if signed else normalized
    nan = np.isnan(unit)
    rgba = colormap(np.where(nan, 0.0, unit))
    # Round, not truncate: matplotlib's bytes=True truncates and is off by one from the
    # published colormap values (viridis(1) is #fde725, truncation gives #fde724).
    out = np.rint(np.asarray(rgba) * 255.0).astype(np.uint8)
    out[nan] = 0
    return out


def apply_colormap(
    values: np.ndarray | torch.Tensor,
    cmap: str | Colormap | None = None,
    *,
    signed: bool | None = None,
    clip_percentile: float = 99.5,
) -> np.ndarray:
    """Colour a 2-D map as RGBA pixels.

    Parameters
    ----------
    values
        ``(H, W)`` map, numpy or torch (leading size-1 axes such as ``(1, 1, H, W)`` are
        dropped). NaN entries become transparent.
    cmap
        Colormap name or object (see :func:`get_cmap`). None picks viridis for unsigned maps
        and the diverging map for signed ones.
    signed
        See :func:`normalize_map`; None decides from the values.
    clip_percentile
        See :func:`normalize_map`.

    Returns
    -------
    numpy.ndarray
        uint8 ``(H, W, 4)`` RGBA; alpha is 0 where the map is NaN and 255 elsewhere (for
        colormaps without transparency).

    Raises
    ------
    BadInputError
        If the map is not 2-D, the colormap is unknown or ``clip_percentile`` is invalid.

    Examples
    --------
    >>> apply_colormap(np.array([[0.0, 1.0]]))[0, 1]  # viridis(1) = #fde725
    array([253, 231,  37, 255], dtype=uint8)
    """
    v = _as_2d(_as_float_array(values))
    if signed is None:
        signed = is_signed_map(v)
    normalized = normalize_map(v, signed=signed, clip_percentile=clip_percentile)
    return _rgba_from_normalized(normalized, cmap, signed)
