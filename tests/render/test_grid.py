"""Grids (mosaic layout, titled figures) and saving pictures (render.figures)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from convlens.errors import BadInputError
from convlens.render.colormaps import apply_colormap
from convlens.render.figures import array_to_png_bytes, figure_to_png_bytes, save_figure
from convlens.render.grid import labelled_grid, tile_grid

SRC = Path(__file__).resolve().parents[2] / "src"

# --- tile_grid -----------------------------------------------------------------------------


def _constant_tiles(n: int, height: int = 4, width: int = 3) -> list[np.ndarray]:
    return [np.full((height, width), 10 * (k + 1), np.uint8) for k in range(n)]


def test_tile_k_lands_at_its_row_and_column() -> None:
    tiles = _constant_tiles(5)
    mosaic = tile_grid(tiles, ncols=3, pad=2, pad_value=255)

    assert mosaic.shape == (2 * 4 + 3 * 2, 3 * 3 + 4 * 2)  # 2 rows, 3 cols, 2-px gaps and frame
    expected = np.full(mosaic.shape, 255, np.uint8)
    for k in range(5):
        row, col = divmod(k, 3)
        top, left = 2 + row * (4 + 2), 2 + col * (3 + 2)
        expected[top : top + 4, left : left + 3] = 10 * (k + 1)
    np.testing.assert_array_equal(mosaic, expected)
    # Spot checks that do not depend on the formula above.
    assert mosaic[2, 2] == 10 and mosaic[2, 7] == 20 and mosaic[8, 2] == 40 and mosaic[8, 7] == 50
    assert mosaic[8, 12] == 255  # the sixth slot is empty


def test_default_ncols_is_square_ish_and_pad_zero_packs_tightly() -> None:
    mosaic = tile_grid(_constant_tiles(9, 2, 2), pad=0)
    assert mosaic.shape == (6, 6)
    np.testing.assert_array_equal(mosaic[::2, ::2], [[10, 20, 30], [40, 50, 60], [70, 80, 90]])


def test_gray_tiles_are_promoted_when_mixed_with_rgb() -> None:
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 200
    gray = np.full((2, 2), 70, np.uint8)
    mosaic = tile_grid([red, gray], ncols=2, pad=1, pad_value=0)
    assert mosaic.shape == (4, 7, 3)
    np.testing.assert_array_equal(mosaic[1, 1], [200, 0, 0])
    np.testing.assert_array_equal(mosaic[1, 4], [70, 70, 70])
    np.testing.assert_array_equal(mosaic[0, 0], [0, 0, 0])


def test_float_tiles_in_unit_range_are_scaled() -> None:
    mosaic = tile_grid([np.full((2, 2), 1.0), np.full((2, 2), 0.5)], ncols=2, pad=0)
    np.testing.assert_array_equal(mosaic, [[255, 255, 128, 128]] * 2)


def test_tile_grid_refuses_mismatched_and_empty_input() -> None:
    with pytest.raises(BadInputError, match="image 1 is 3x3"):
        tile_grid([np.zeros((2, 2), np.uint8), np.zeros((3, 3), np.uint8)])
    with pytest.raises(BadInputError, match="at least one"):
        tile_grid([])
    with pytest.raises(BadInputError, match="pad_value"):
        tile_grid(_constant_tiles(2), pad_value=300)


# --- labelled_grid -------------------------------------------------------------------------


def test_labelled_grid_titles_layout_and_colours() -> None:
    maps = [np.arange(12.0).reshape(3, 4) * (k + 1) for k in range(5)]
    titles = [f"ch {k} (max {m.max():.1f})" for k, m in enumerate(maps)]
    fig = labelled_grid(maps, titles, ncols=3, suptitle="layer1", tile_inches=1.5)

    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6  # 2 x 3, the last one empty
    assert [ax.get_title() for ax in fig.axes[:5]] == titles
    assert all(not ax.axison for ax in fig.axes)
    assert len(fig.axes[5].images) == 0
    assert fig.get_suptitle() == "layer1"
    np.testing.assert_allclose(fig.get_size_inches()[0], 3 * 1.5 + 0.2)
    # Each 2-D map is drawn with convlens's own colouring.
    np.testing.assert_array_equal(fig.axes[2].images[0].get_array(), apply_colormap(maps[2]))
    png = Image.open(io.BytesIO(figure_to_png_bytes(fig)))
    assert png.size == tuple(round(s * 100) for s in fig.get_size_inches())


def test_labelled_grid_signed_is_decided_for_all_tiles() -> None:
    positive = np.ones((2, 2))
    mixed = np.array([[-1.0, 1.0], [0.0, 0.5]])
    fig = labelled_grid([positive, mixed])
    # One signed map makes the whole grid diverging, so 1.0 is red in both tiles.
    np.testing.assert_array_equal(
        fig.axes[0].images[0].get_array(), apply_colormap(positive, signed=True)
    )


def test_labelled_grid_refuses_wrong_number_of_titles() -> None:
    with pytest.raises(BadInputError, match="2 titles for 3 images"):
        labelled_grid(_constant_tiles(3), ["a", "b"])


def test_render_never_touches_pyplot() -> None:
    code = """
import sys
import numpy as np
from convlens.render.figures import figure_to_png_bytes
from convlens.render.grid import labelled_grid
from convlens.render.overlay import overlay
figure_to_png_bytes(labelled_grid([np.eye(3)], ["x"]))
overlay(np.zeros((3, 3, 3), np.uint8), np.eye(3))
print("matplotlib.pyplot" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(SRC), "MPLBACKEND": "Agg"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# --- figures: save_figure and PNG bytes ----------------------------------------------------


def _figure() -> Figure:
    fig = Figure(figsize=(4, 3))
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def test_save_figure_png_svg_pdf(tmp_path: Path) -> None:
    fig = _figure()
    png = save_figure(fig, tmp_path / "deep" / "er" / "plot.png", dpi=50)
    assert png == tmp_path / "deep" / "er" / "plot.png"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (200, 150)
    svg = save_figure(fig, tmp_path / "plot.svg").read_bytes()
    assert svg.lstrip().startswith((b"<?xml", b"<svg"))
    assert save_figure(fig, tmp_path / "plot.PDF").read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "deep",
        "plot.PDF",
        "plot.svg",
    ]  # no temp files


def test_save_array_is_pixel_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    for name in ("a.png", "a.bmp", "a.tiff"):
        with Image.open(save_figure(arr, tmp_path / name)) as im:
            np.testing.assert_array_equal(np.asarray(im), arr)
    with Image.open(save_figure(arr, tmp_path / "a.jpg")) as im:
        assert im.size == (23, 17)
    assert (
        save_figure(arr, tmp_path / "a.svg").read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
    )
    assert save_figure(arr, tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    target = tmp_path / "x.png"
    save_figure(np.zeros((2, 2), np.uint8), target)
    save_figure(np.full((3, 5), 9, np.uint8), target)
    with Image.open(target) as im:
        np.testing.assert_array_equal(np.asarray(im), np.full((3, 5), 9))
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


@pytest.mark.parametrize("name", ["plot.gif", "plot", "plot.jpg"])
def test_bad_extension_raises_and_writes_nothing(tmp_path: Path, name: str) -> None:
    given = f"'.{name.partition('.')[2]}'" if "." in name else "no extension"
    with pytest.raises(BadInputError, match=r"use one of \.pdf, \.png, \.svg$") as info:
        save_figure(_figure(), tmp_path / "sub" / name)
    assert given in str(info.value)
    assert not (tmp_path / "sub").exists()
    with pytest.raises(BadInputError, match="gif"):
        save_figure(np.zeros((2, 2), np.uint8), tmp_path / "sub" / "a.gif")
    assert list(tmp_path.iterdir()) == []


def test_non_uint8_array_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="uint8"):
        save_figure(np.zeros((2, 2)), tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


def test_array_to_png_bytes_round_trips() -> None:
    rgba = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    data = array_to_png_bytes(rgba)
    assert data.startswith(b"\x89PNG")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), rgba)
