"""Grids of images: a plain pixel mosaic, or a matplotlib figure with a title per tile.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas, never through
pyplot, so no global figure state is created and calls from several threads do not mix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from convlens.errors import BadInputError
from convlens.render.colormaps import _as_float_array, apply_colormap, is_signed_map
from convlens.render.overlay import to_uint8_image

__all__ = ["labelled_grid", "tile_grid"]

# Inches reserved above each tile for its title and above the grid for the suptitle.
_TITLE_INCHES = 0.3
_SUPTITLE_INCHES = 0.45
_MARGIN_INCHES = 0.1


def _grid_shape(n: int, ncols: int | None) -> tuple[int, int]:
    if n == 0:
        raise BadInputError("no images to put in a grid; pass at least one")
    if ncols is None:
        ncols = math.ceil(math.sqrt(n))
    if ncols < 1:
        raise BadInputError(f"ncols={ncols} must be at least 1")
    ncols = min(ncols, n)
    return math.ceil(n / ncols), ncols


def _tile_to_uint8(image: np.ndarray, index: int) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` uint8 with C in {3, 4}; floats must be in [0, 1]."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return to_uint8_image(a)[:, :, 0]
    if a.ndim == 3 and a.shape[2] == 4:
        rgba = np.empty(a.shape, dtype=np.uint8)
        rgba[:, :, :3] = to_uint8_image(a)
        rgba[:, :, 3] = a[:, :, 3] if a.dtype == np.uint8 else to_uint8_image(a[:, :, 3])[:, :, 0]
        return rgba
    if a.ndim == 3 and a.shape[2] == 3:
        return to_uint8_image(a)
    raise BadInputError(
        f"image {index} has shape {tuple(a.shape)}; tiles must be (H, W), (H, W, 3) or (H, W, 4)"
    )


def _with_channels(tile: np.ndarray, channels: int) -> np.ndarray:
    """Promote gray -> RGB -> RGBA (opaque) so all tiles share one channel count."""
    if channels == 1:
        return tile
    if tile.ndim == 2:
        tile = np.repeat(tile[:, :, None], 3, axis=2)
    if channels == 4 and tile.shape[2] == 3:
        tile = np.concatenate([tile, np.full((*tile.shape[:2], 1), 255, np.uint8)], axis=2)
    return tile


def tile_grid(
    images: Sequence[np.ndarray],
    *,
    ncols: int | None = None,
    pad: int = 2,
    pad_value: int = 255,
) -> np.ndarray:
    """Arrange equally sized images into one mosaic array (no text).

    Tile ``k`` goes to row ``k // ncols``, column ``k % ncols``; its top-left pixel is at
    ``(pad + row * (H + pad), pad + col * (W + pad))``. ``pad`` pixels of ``pad_value``
    separate the tiles and frame the mosaic; unused slots of the last row are ``pad_value``.

    Parameters
    ----------
    images
        Arrays ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``, uint8 or float in
        [0, 1], all the same H and W. If any is RGB(A), gray tiles are replicated to match.
    ncols
        Columns; default ``ceil(sqrt(len(images)))``.
    pad
        Gap in pixels between tiles and around the border.
    pad_value
        Gray level 0-255 of the gaps (alpha 255 for RGBA mosaics).

    Returns
    -------
    numpy.ndarray
        uint8 ``(rows * (H + pad) + pad, ncols * (W + pad) + pad[, C])``.

    Raises
    ------
    BadInputError
        If there are no images, sizes differ, a shape is unsupported, or an option is out of
        range.

    Examples
    --------
    >>> tile_grid([np.zeros((2, 2), np.uint8)] * 3, ncols=2, pad=1).shape
    (7, 7)
    """
    if pad < 0:
        raise BadInputError(f"pad={pad} must be >= 0")
    if not 0 <= pad_value <= 255:
        raise BadInputError(f"pad_value={pad_value} must be a gray level in 0..255")
    rows, ncols = _grid_shape(len(images), ncols)
    tiles = [_tile_to_uint8(image, k) for k, image in enumerate(images)]
    height, width = tiles[0].shape[:2]
    for k, tile in enumerate(tiles):
        if tile.shape[:2] != (height, width):
            raise BadInputError(
                f"image {k} is {tile.shape[0]}x{tile.shape[1]} but image 0 is {height}x{width}; tiles must share one size (resize them first)"
            )
    channels = max(1 if t.ndim == 2 else t.shape[2] for t in tiles)
    shape: tuple[int, ...] = (rows * (height + pad) + pad, ncols * (width + pad) + pad)
    if channels > 1:
        shape = (*shape, channels)
    mosaic = np.full(shape, pad_value, dtype=np.uint8)
    if channels == 4:
        mosaic[:, :, 3] = 255
    for k, tile in enumerate(tiles):
        top = pad + (k // ncols) * (height + pad)
        left = pad + (k % ncols) * (width + pad)
        mosaic[top : top + height, left : left + width] = _with_channels(tile, channels)
    return mosaic


def _as_display_input(image: np.ndarray | torch.Tensor) -> np.ndarray:
    a = _as_float_array(image) if isinstance(image, torch.Tensor) else np.asarray(image)
    return a[:, :, 0] if a.ndim == 3 and a.shape[2] == 1 else a


def _display_array(
    a: np.ndarray, cmap: str | Colormap | None, signed: bool, index: int
) -> np.ndarray:
    """What imshow gets: 2-D maps are coloured by convlens's rules, pictures pass through."""
    if a.ndim == 2:
        return apply_colormap(a, cmap, signed=signed)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return _tile_to_uint8(a, index)
    raise BadInputError(
        f"image {index} has shape {tuple(a.shape)}; expected a 2-D map or an (H, W, 3) picture"
    )


def labelled_grid(
    images: Sequence[np.ndarray | torch.Tensor],
    titles: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    suptitle: str | None = None,
    cmap: str | Colormap | None = None,
    signed: bool | None = None,
    tile_inches: float = 2.0,
) -> Figure:
    """A figure with one titled, axis-free subplot per image.

    2-D arrays are maps: each is normalised on its own scale and coloured with
    :func:`~convlens.render.colormaps.apply_colormap` (so put the scale in the title, e.g.
    ``"ch 17 (max 3.2)"``). ``(H, W, 3|4)`` arrays are pictures and are shown as they are.

    Parameters
    ----------
    images
        Maps ``(H, W)`` and/or pictures ``(H, W, 3)``, numpy (or torch maps); sizes may differ.
    titles
        One title per image, or None.
    ncols
        Columns; default ``ceil(sqrt(len(images)))``.
    suptitle
        Title above the whole grid.
    cmap
        Colormap for the 2-D maps; None picks viridis, or the diverging map when signed.
    signed
        Whether the maps are signed; None decides once for all maps together (signed if any
        map is), so every tile of a grid uses the same colour convention.
    tile_inches
        Width and height of each tile in inches.

    Returns
    -------
    matplotlib.figure.Figure
        With an Agg canvas attached; save it with :func:`~convlens.render.figures.save_figure`.

    Raises
    ------
    BadInputError
        If the titles do not match the images, or an image or option is unusable.
    """
    if tile_inches <= 0:
        raise BadInputError(f"tile_inches={tile_inches} must be > 0")
    if titles is not None and len(titles) != len(images):
        raise BadInputError(
            f"{len(titles)} titles for {len(images)} images; give one title per image"
        )
    rows, ncols = _grid_shape(len(images), ncols)
    raw = [_as_display_input(image) for image in images]
    if signed is None:
        signed = any(a.ndim == 2 and is_signed_map(a) for a in raw)
    arrays = [_display_array(a, cmap, signed, k) for k, a in enumerate(raw)]

    title_in = _TITLE_INCHES if titles is not None else 0.0
    top_in = _MARGIN_INCHES + (_SUPTITLE_INCHES if suptitle else 0.0) + title_in
    height = rows * (tile_inches + title_in) - title_in + top_in + _MARGIN_INCHES
    width = ncols * tile_inches + 2 * _MARGIN_INCHES
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(
        rows,
        ncols,
        squeeze=False,
        gridspec_kw={
            "left": _MARGIN_INCHES / width,
            "right": 1 - _MARGIN_INCHES / width,
            "bottom": _MARGIN_INCHES / height,
            "top": 1 - top_in / height,
            "hspace": title_in / tile_inches,
            "wspace": 0.05,
        },
    )
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(arrays):
            ax.imshow(arrays[k], interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[k], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, y=1 - _MARGIN_INCHES / height, va="top")
    return fig
