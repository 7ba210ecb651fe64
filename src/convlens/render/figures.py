"""Saving pictures: matplotlib figures and uint8 arrays to files or PNG bytes.

Files are written atomically (a temporary file in the target folder, then ``os.replace``),
so a reader never sees half a picture and a failed save leaves no partial file behind.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from convlens.atomic import atomic_open
from convlens.errors import BadInputError

__all__ = [
    "ARRAY_FORMATS",
    "FIGURE_FORMATS",
    "MEDIA_TYPES",
    "array_to_bytes",
    "array_to_png_bytes",
    "figure_to_bytes",
    "figure_to_png_bytes",
    "save_figure",
]

FIGURE_FORMATS = (".pdf", ".png", ".svg")
"""Extensions :func:`save_figure` accepts for a matplotlib figure."""
# Raster formats go through PIL; vector formats wrap the array in a figure.
_PIL_FORMATS = {
    ".bmp": "BMP",
    ".jpeg": "JPEG",
    ".jpg": "JPEG",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
ARRAY_FORMATS = tuple(sorted({*_PIL_FORMATS, ".pdf", ".svg"}))
"""Extensions :func:`save_figure` accepts for a uint8 array."""


def _check_array(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        raise BadInputError(
            f"array of dtype {a.dtype} cannot be saved as a picture; pass uint8 pixels (see render.to_uint8_image or render.apply_colormap)"
        )
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or 0 in a.shape:
        raise BadInputError(
            f"array of shape {a.shape} is not a picture; expected (H, W), (H, W, 3) or (H, W, 4)"
        )
    return a


def _wrap_array(arr: np.ndarray, dpi: float) -> Figure:
    """A figure exactly the array's size in pixels at ``dpi``, showing it with no margins."""
    height, width = arr.shape[:2]
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    # interpolation="none" embeds the pixels as they are in vector output (no resampling).
    if arr.ndim == 2:
        ax.imshow(arr, cmap="gray", vmin=0, vmax=255, interpolation="none")
    else:
        ax.imshow(arr, interpolation="none")
    return fig


def _pil_image(arr: np.ndarray, fmt: str) -> Image.Image:
    image = Image.fromarray(arr)
    if fmt in ("JPEG", "BMP") and image.mode == "RGBA":
        # These formats have no alpha: composite over white so transparent parts stay light.
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        image = background
    return image


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        write(f)


def save_figure(
    fig_or_array: Figure | np.ndarray, path: str | os.PathLike[str], *, dpi: float = 150
) -> Path:
    """Save a matplotlib figure or a uint8 picture array; the format follows the extension.

    Parameters
    ----------
    fig_or_array
        A :class:`matplotlib.figure.Figure` (``.png``, ``.svg``, ``.pdf``), or a uint8 array
        ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` (also ``.jpg``, ``.jpeg``, ``.bmp``,
        ``.tif``, ``.tiff``, ``.webp``). Raster arrays are saved pixel for pixel.
    path
        Target file; missing parent folders are created. Written atomically.
    dpi
        Resolution of raster output from a figure; for an array saved as SVG/PDF, the
        physical size is ``H / dpi`` by ``W / dpi`` inches.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    BadInputError
        If the extension is not supported (nothing is written) or the array is not uint8
        pixels.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if isinstance(fig_or_array, Figure):
        _check_extension(path, ext, FIGURE_FORMATS, "a figure")
        fig = fig_or_array
        _atomic_write(path, lambda f: fig.savefig(f, format=ext[1:], dpi=dpi))
        return path
    _check_extension(path, ext, ARRAY_FORMATS, "an array")
    arr = _check_array(fig_or_array)
    if ext in _PIL_FORMATS:
        image = _pil_image(arr, _PIL_FORMATS[ext])
        _atomic_write(path, lambda f: image.save(f, format=_PIL_FORMATS[ext]))
    else:
        wrapped = _wrap_array(arr, dpi)
        _atomic_write(path, lambda f: wrapped.savefig(f, format=ext[1:], dpi=dpi))
    return path


def _check_extension(path: Path, ext: str, supported: tuple[str, ...], what: str) -> None:
    if ext not in supported:
        given = f"extension {ext!r}" if ext else "no extension"
        raise BadInputError(
            f"{path}: {given} is not supported for {what}; use one of {', '.join(supported)}"
        )


def figure_to_png_bytes(fig: Figure, *, dpi: float = 100) -> bytes:
    """Render a figure to PNG bytes (for notebook ``_repr_png_`` and HTML reports).

    Parameters
    ----------
    fig
        The figure.
    dpi
        Resolution.

    Returns
    -------
    bytes
        A PNG file's content.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def array_to_png_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 picture array ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` as PNG bytes.

    Parameters
    ----------
    arr
        uint8 pixels.

    Returns
    -------
    bytes
        A PNG file's content, pixel for pixel.

    Raises
    ------
    BadInputError
        If the array is not uint8 pixels of a supported shape.
    """
    buffer = io.BytesIO()
    Image.fromarray(_check_array(arr)).save(buffer, format="PNG")
    return buffer.getvalue()


#: media type of each format :func:`array_to_bytes` writes
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def array_to_bytes(arr: np.ndarray, fmt: str = "png", *, quality: int = 85) -> bytes:
    """Encode a uint8 picture array as PNG (lossless), JPEG or WebP (lossy, ``quality`` 1-95).

    The same pixels, format and quality always give the same bytes (the encoders here are
    deterministic), so an encoded picture can be checked by hash against a re-encoding.
    JPEG and WebP are for photos and overlays, several times smaller than PNG; keep PNG
    where every pixel value matters (an adversarial image read back by a classifier).

    Raises
    ------
    BadInputError
        If the array is not uint8 pixels, or ``fmt`` / ``quality`` is not supported.
    """
    if fmt not in MEDIA_TYPES:
        raise BadInputError(
            f"picture format {fmt!r} is not supported; choose from {', '.join(MEDIA_TYPES)}"
        )
    if fmt == "png":
        return array_to_png_bytes(arr)
    if not isinstance(quality, int) or not 1 <= quality <= 95:
        raise BadInputError(f"quality={quality!r} must be an integer in 1..95")
    image = _pil_image(_check_array(arr), fmt.upper())  # JPEG: alpha composited over white
    buffer = io.BytesIO()
    options = {"quality": quality, "method": 4} if fmt == "webp" else {"quality": quality}
    image.save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()


def figure_to_bytes(fig: Figure, *, dpi: float = 100, fmt: str = "png", quality: int = 85) -> bytes:
    """Render a figure and encode it as :func:`array_to_bytes` does (PNG: the figure's own PNG)."""
    if fmt == "png":
        return figure_to_png_bytes(fig, dpi=dpi)
    with Image.open(io.BytesIO(figure_to_png_bytes(fig, dpi=dpi))) as image:
        pixels = np.asarray(image.convert("RGB"))
    return array_to_bytes(pixels, fmt, quality=quality)
