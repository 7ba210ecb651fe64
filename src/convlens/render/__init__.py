"""Turning tensors into pictures: colormaps, overlays, grids, figures, views.

Renderers never compute gradients; methods never draw (DESIGN.md).
"""

from convlens.render.colormaps import (
    COLORBLIND_CMAP,
    DEFAULT_CMAP,
    DIVERGING_CMAP,
    apply_colormap,
    get_cmap,
    is_signed_map,
    normalize_map,
)
from convlens.render.figures import (
    ARRAY_FORMATS,
    FIGURE_FORMATS,
    array_to_png_bytes,
    figure_to_png_bytes,
    save_figure,
)
from convlens.render.grid import labelled_grid, tile_grid
from convlens.render.overlay import overlay, resize_map, to_uint8_image

__all__ = [
    "ARRAY_FORMATS",
    "COLORBLIND_CMAP",
    "DEFAULT_CMAP",
    "DIVERGING_CMAP",
    "FIGURE_FORMATS",
    "apply_colormap",
    "array_to_png_bytes",
    "figure_to_png_bytes",
    "get_cmap",
    "is_signed_map",
    "labelled_grid",
    "normalize_map",
    "overlay",
    "resize_map",
    "save_figure",
    "tile_grid",
    "to_uint8_image",
]
