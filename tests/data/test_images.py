"""Image I/O: every file is generated here, and every value is checked against what was written.

References are independent of the loader: the arrays the files were made from, PIL's own
``exif_transpose`` and CMYK conversion, closed forms for pure CMYK inks, a hand-written PNG
encoder for 16-bit colour (which PIL cannot write), and numpy float64 rounding.
"""

from __future__ import annotations

import io
import os
import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, ImageOps

import convlens.data.images as images_module
from convlens.data.images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    find_images,
    load_image,
    quantize_8bit,
    save_image,
    source_name,
)
from convlens.errors import BadInputError, ImageReadError


# -- helpers ----------------------------------------------------------------------------------
def rgb8(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth8(height: int, width: int) -> np.ndarray:
    """A smooth gradient (lossy codecs keep it well)."""
    y, x = np.mgrid[0:height, 0:width]
    channels = [
        x * 255 // max(width - 1, 1),
        y * 255 // max(height - 1, 1),
        (x + y) * 255 // (width + height),
    ]
    return np.stack(channels, axis=2).astype(np.uint8)


def write(path: Path, array: np.ndarray, image_format: str, **options: object) -> Path:
    Image.fromarray(array).save(path, image_format, **options)
    return path


def u8(values: object) -> np.ndarray:
    """8-bit values as float32 in [0, 1], computed as the loader must (exactly)."""
    return np.asarray(values, np.float32) / np.float32(255)


def as_hwc(tensor: torch.Tensor) -> np.ndarray:
    assert tensor.dtype == torch.float32 and tensor.dim() == 3 and tensor.shape[0] == 3
    return tensor.permute(1, 2, 0).numpy()


def over_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Reference compositing in float64: color and alpha in [0, 1]."""
    return color * alpha + (1.0 - alpha)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(
    samples: np.ndarray,
    color_type: int,
    bit_depth: int = 16,
    ihdr_size: tuple[int, int] | None = None,
) -> bytes:
    """A PNG from (H, W, C) samples, cycling rows through the None, Sub, Up and Paeth filters.

    PIL cannot write 16-bit colour PNGs, so the tests encode them here.
    """
    height, width = samples.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = samples.astype(dtype).reshape(height, -1).view(np.uint8).astype(np.int32)
    bpp = samples.shape[2] * bit_depth // 8
    out = []
    for y in range(height):
        raw = rows[y]
        left = np.concatenate([np.zeros(bpp, np.int32), raw[:-bpp]])
        up = rows[y - 1] if y else np.zeros_like(raw)
        up_left = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        kind = (0, 1, 2, 4)[y % 4]
        if kind == 0:
            filtered = raw
        elif kind == 1:
            filtered = raw - left
        elif kind == 2:
            filtered = raw - up
        else:
            p = left + up - up_left
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
            predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
            filtered = raw - predictor
        out.append(bytes([kind]) + (filtered % 256).astype(np.uint8).tobytes())
    width_, height_ = ihdr_size or (width, height)
    header = struct.pack(">IIBBBBB", width_, height_, bit_depth, color_type, 0, 0, 0)
    chunks = (
        png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"".join(out)))
        + png_chunk(b"IEND", b"")
    )
    return b"\x89PNG\r\n\x1a\n" + chunks


def header(path: Path) -> tuple[str, str | None]:
    """PIL's mode and format for a file, closing it again."""
    with Image.open(path) as image:
        return image.mode, image.format


def read_error(source: object, **kwargs: object) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    return info.value


# -- ordinary files: exact values ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("image_format", "suffix", "options"),
    [
        ("PNG", ".png", {}),
        ("BMP", ".bmp", {}),
        ("TIFF", ".tif", {}),
        ("TIFF", ".tiff", {"compression": "tiff_deflate"}),
        ("PPM", ".ppm", {}),
        ("WEBP", ".webp", {"lossless": True}),
    ],
)
def test_lossless_rgb_files_load_exactly(
    tmp_path: Path, image_format: str, suffix: str, options: dict
) -> None:
    pixels = rgb8(7, 9)
    loaded = load_image(write(tmp_path / f"x{suffix}", pixels, image_format, **options))
    assert (
        loaded.shape == (3, 7, 9) and loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    )
    np.testing.assert_array_equal(as_hwc(loaded), pixels.astype(np.float32) / 255)


@pytest.mark.parametrize(
    ("image_format", "options", "tolerance"),
    [("JPEG", {"quality": 95}, 0.03), ("WEBP", {"quality": 90}, 0.04)],
)
def test_lossy_files_load_close_to_the_original(
    tmp_path: Path, image_format: str, options: dict, tolerance: float
) -> None:
    pixels = smooth8(32, 48)
    loaded = as_hwc(load_image(write(tmp_path / "x.img", pixels, image_format, **options)))
    assert np.abs(loaded - pixels / 255).mean() < tolerance / 3
    assert np.abs(loaded - pixels / 255).max() < tolerance * 3


@pytest.mark.parametrize(("height", "width"), [(2, 3), (20, 2000), (2000, 20), (1, 1)])
def test_odd_sizes_keep_height_and_width_apart(tmp_path: Path, height: int, width: int) -> None:
    pixels = rgb8(height, width, seed=height)
    loaded = load_image(write(tmp_path / "x.png", pixels, "PNG"))
    assert loaded.shape == (3, height, width)
    np.testing.assert_array_equal(as_hwc(loaded), u8(pixels))


@pytest.mark.parametrize(
    ("image_format", "name"),
    [
        ("PNG", "really_a_png.jpg"),
        ("JPEG", "really_a_jpeg.png"),
        ("PNG", "no_extension"),
        ("BMP", "bitmap.gif"),
    ],
)
def test_format_comes_from_content_not_suffix(tmp_path: Path, image_format: str, name: str) -> None:
    pixels = smooth8(16, 16)
    loaded = as_hwc(load_image(write(tmp_path / name, pixels, image_format)))
    assert np.abs(loaded - pixels / 255).max() < (0.1 if image_format == "JPEG" else 1e-7)


def test_grayscale_png_and_pgm_become_three_equal_channels(tmp_path: Path) -> None:
    gray = rgb8(5, 6)[:, :, 0]
    for path in (write(tmp_path / "g.png", gray, "PNG"), write(tmp_path / "g.pgm", gray, "PPM")):
        loaded = as_hwc(load_image(path))
        for channel in range(3):
            np.testing.assert_array_equal(loaded[:, :, channel], u8(gray))
    assert (tmp_path / "g.pgm").read_bytes().startswith(b"P5")


def test_bilevel_image_is_black_and_white(tmp_path: Path) -> None:
    bits = np.random.default_rng(3).random((6, 10)) > 0.5
    Image.fromarray(bits).save(tmp_path / "b.png")
    loaded = as_hwc(load_image(tmp_path / "b.png"))
    np.testing.assert_array_equal(loaded[:, :, 1], bits.astype(np.float32))


def test_gray_alpha_is_composited_over_white(tmp_path: Path) -> None:
    gray = np.array([[0, 100, 200], [255, 30, 0]], np.uint8)
    alpha = np.array([[0, 128, 255], [10, 200, 255]], np.uint8)
    path = write(tmp_path / "la.png", np.dstack([gray, alpha]), "PNG")
    assert header(path)[0] == "LA"
    expected = over_white(gray / 255, alpha / 255)
    loaded = as_hwc(load_image(path))
    np.testing.assert_allclose(loaded[:, :, 0], expected, atol=1e-6)
    assert loaded[0, 0, 0] == 1.0  # fully transparent black is white, not black


@pytest.mark.parametrize(
    ("image_format", "options"), [("PNG", {}), ("TIFF", {}), ("WEBP", {"lossless": True})]
)
def test_rgba_is_composited_over_white(tmp_path: Path, image_format: str, options: dict) -> None:
    color = rgb8(4, 5, seed=1)
    alpha = np.array([[0, 64, 128, 192, 255]] * 4, np.uint8)
    path = write(tmp_path / "rgba.img", np.dstack([color, alpha]), image_format, **options)
    loaded = as_hwc(load_image(path))
    np.testing.assert_allclose(loaded, over_white(color / 255, alpha[:, :, None] / 255), atol=1e-6)
    np.testing.assert_array_equal(loaded[:, 0], 1.0)
    np.testing.assert_array_equal(loaded[:, 4], u8(color[:, 4]))


def palette_image(indices: np.ndarray, palette: np.ndarray) -> Image.Image:
    image = Image.frombytes("P", indices.shape[::-1], indices.astype(np.uint8).tobytes())
    image.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
    return image


def test_palette_png_and_gif_look_up_the_palette(tmp_path: Path) -> None:
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [17, 99, 201]])
    indices = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 3, 3]])
    image = palette_image(indices, palette)
    for name, image_format in (
        ("p.png", "PNG"),
        ("p.gif", "GIF"),
        ("p.bmp", "BMP"),
        ("p.tif", "TIFF"),
    ):
        image.save(tmp_path / name, image_format)
        assert header(tmp_path / name)[0] == "P"
        np.testing.assert_array_equal(
            as_hwc(load_image(tmp_path / name)), u8(palette[indices]), err_msg=name
        )


def test_palette_transparency_index_and_per_entry_alpha(tmp_path: Path) -> None:
    palette = np.array([[0, 0, 0], [200, 10, 10], [10, 10, 200]])
    indices = np.array([[0, 1, 2], [2, 1, 0]])
    image = palette_image(indices, palette)
    image.save(tmp_path / "index.png", transparency=0)
    image.save(tmp_path / "index.gif", transparency=0)
    for name in ("index.png", "index.gif"):
        loaded = as_hwc(load_image(tmp_path / name))
        np.testing.assert_array_equal(loaded[indices == 0], 1.0)  # transparent black -> white
        np.testing.assert_array_equal(loaded[indices == 1], u8(np.tile([200, 10, 10], (2, 1))))
    image.save(tmp_path / "alpha.png", transparency=bytes([255, 128, 0]))
    loaded = as_hwc(load_image(tmp_path / "alpha.png"))
    np.testing.assert_allclose(
        loaded[0, 1], over_white(np.array([200, 10, 10]) / 255, 128 / 255), atol=1e-6
    )
    np.testing.assert_array_equal(loaded[0, 2], 1.0)
    np.testing.assert_array_equal(loaded[0, 0], 0.0)


def test_rgb_color_key_transparency_becomes_white(tmp_path: Path) -> None:
    pixels = np.array([[[10, 20, 30], [1, 2, 3]], [[10, 20, 31], [10, 20, 30]]], np.uint8)
    write(tmp_path / "key.png", pixels, "PNG", transparency=(10, 20, 30))
    loaded = as_hwc(load_image(tmp_path / "key.png"))
    np.testing.assert_array_equal(loaded[0, 0], 1.0)
    np.testing.assert_array_equal(loaded[1, 1], 1.0)
    np.testing.assert_array_equal(loaded[1, 0], u8([10, 20, 31]))


# -- 16 bits ------------------------------------------------------------------------------------
def values16(shape: tuple[int, ...], seed: int = 5) -> np.ndarray:
    values = np.random.default_rng(seed).integers(0, 65536, shape).astype(np.uint16)
    values.flat[:4] = [0, 65535, 1, 32767]
    # The test has teeth: reading these through 8 bits would be off by far more than 1e-4.
    assert np.abs(np.round(values / 257) * 257 - values).max() / 65535 > 1e-3
    return values


@pytest.mark.parametrize(
    ("image_format", "suffix"), [("PNG", ".png"), ("TIFF", ".tif"), ("PPM", ".pgm")]
)
def test_16bit_grayscale_keeps_16bit_precision(
    tmp_path: Path, image_format: str, suffix: str
) -> None:
    values = values16((6, 7))
    path = tmp_path / f"g16{suffix}"
    Image.fromarray(values).save(path, image_format)
    loaded = as_hwc(load_image(path))
    error = np.abs(loaded - values[:, :, None] / 65535.0).max()
    assert error < 1e-6  # well inside the required 1e-4
    np.testing.assert_array_equal(loaded[:, :, 0], loaded[:, :, 2])


@pytest.mark.parametrize(("channels", "color_type"), [(3, 2), (4, 6)])
def test_16bit_color_png_keeps_16bit_precision(
    tmp_path: Path, channels: int, color_type: int
) -> None:
    values = values16((9, 11, channels))
    if channels == 4:
        values[..., 3] = np.where(np.arange(11) % 3 == 0, 65535, values[..., 3])
    path = tmp_path / "c16.png"
    path.write_bytes(png_bytes(values, color_type))
    loaded = as_hwc(load_image(path)).astype(np.float64)
    color = values[..., :3] / 65535.0
    expected = color if channels == 3 else over_white(color, values[..., 3:] / 65535.0)
    assert np.abs(loaded - expected).max() < 1e-6


def test_16bit_gray_alpha_png_keeps_16bit_precision(tmp_path: Path) -> None:
    values = values16((5, 8, 2))
    path = tmp_path / "la16.png"
    path.write_bytes(png_bytes(values, color_type=4))
    loaded = as_hwc(load_image(path)).astype(np.float64)
    expected = over_white(values[..., 0] / 65535.0, values[..., 1] / 65535.0)
    assert np.abs(loaded[..., 1] - expected).max() < 1e-6


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_16bit_rgb_tiff_keeps_16bit_precision(
    tmp_path: Path, byteorder: str, compression: str | None
) -> None:
    tifffile = pytest.importorskip("tifffile")
    values = values16((6, 10, 3))
    path = tmp_path / "c16.tif"
    tifffile.imwrite(path, values, photometric="rgb", byteorder=byteorder, compression=compression)
    loaded = as_hwc(load_image(path)).astype(np.float64)
    assert np.abs(loaded - values / 65535.0).max() < 1e-6


def test_8bit_png_from_own_encoder_matches_pil(tmp_path: Path) -> None:
    """Checks the test's PNG encoder itself, so the 16-bit tests rest on a verified writer."""
    pixels = rgb8(9, 11, seed=4)
    data = png_bytes(pixels, color_type=2, bit_depth=8)
    with Image.open(io.BytesIO(data)) as image:
        np.testing.assert_array_equal(np.asarray(image), pixels)


# -- colour spaces, orientation, multi-picture files ------------------------------------------
@pytest.mark.parametrize(
    ("cmyk", "rgb"),
    [
        ((255, 0, 0, 0), (0, 255, 255)),  # cyan
        ((0, 255, 0, 0), (255, 0, 255)),  # magenta
        ((0, 0, 255, 0), (255, 255, 0)),  # yellow
        ((0, 0, 0, 255), (0, 0, 0)),  # black
        ((0, 0, 0, 0), (255, 255, 255)),  # no ink
        ((40, 120, 200, 30), None),  # a mix: compared with PIL only
    ],
)
def test_cmyk_jpeg_converts_to_rgb(
    tmp_path: Path, cmyk: tuple[int, ...], rgb: tuple[int, ...] | None
) -> None:
    solid = Image.new("CMYK", (16, 16), cmyk)
    solid.save(tmp_path / "cmyk.jpg", "JPEG", quality=95)
    assert header(tmp_path / "cmyk.jpg")[0] == "CMYK"
    pil_reference = np.asarray(solid.convert("RGB"))[0, 0] / 255
    loaded = as_hwc(load_image(tmp_path / "cmyk.jpg"))
    np.testing.assert_allclose(loaded.mean(axis=(0, 1)), pil_reference, atol=0.02)
    if rgb is not None:  # pure inks: the answer does not depend on a conversion formula
        np.testing.assert_allclose(loaded.mean(axis=(0, 1)), np.array(rgb) / 255, atol=0.02)


def corner_marked(height: int = 32, width: int = 48) -> np.ndarray:
    pixels = np.full((height, width, 3), (0, 0, 255), np.uint8)
    pixels[:12, :12] = (255, 0, 0)  # stored top-left corner: red
    return pixels


@pytest.mark.parametrize(
    ("orientation", "red_corner"),
    [(6, "top-right"), (8, "bottom-left"), (3, "bottom-right"), (1, "top-left")],
)
def test_exif_orientation_of_a_jpeg(tmp_path: Path, orientation: int, red_corner: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    write(tmp_path / "photo.jpg", corner_marked(), "JPEG", quality=95, exif=exif)
    loaded = as_hwc(load_image(tmp_path / "photo.jpg"))
    assert loaded.shape[:2] == ((48, 32) if orientation in (6, 8) else (32, 48))
    h, w = loaded.shape[:2]
    corners = {
        "top-left": loaded[3, 3],
        "top-right": loaded[3, w - 4],
        "bottom-left": loaded[h - 4, 3],
        "bottom-right": loaded[h - 4, w - 4],
    }
    for name, pixel in corners.items():
        red = pixel[0] > 0.8 and pixel[2] < 0.2
        assert red == (name == red_corner), (name, pixel)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_pil_exif_transpose(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = write(tmp_path / "o.png", rgb8(3, 5, seed=orientation), "PNG", exif=exif)
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB")) / np.float32(255)
    np.testing.assert_array_equal(as_hwc(load_image(path)), expected)


def test_exif_orientation_also_turns_16bit_color(tmp_path: Path) -> None:
    values = values16((4, 6, 3))
    data = png_bytes(values, color_type=2)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif_chunk = png_chunk(b"eXIf", exif.tobytes())
    path = tmp_path / "turned16.png"
    path.write_bytes(data[:33] + exif_chunk + data[33:])  # after the 33-byte signature + IHDR
    loaded = as_hwc(load_image(path)).astype(np.float64)
    assert np.abs(loaded - np.rot90(values, -1) / 65535.0).max() < 1e-6


def test_mpo_camera_jpeg_reads_its_first_picture(tmp_path: Path) -> None:
    first, second = Image.fromarray(smooth8(16, 24)), Image.new("RGB", (24, 16), (255, 0, 0))
    first.save(tmp_path / "camera.jpg", "MPO", save_all=True, append_images=[second])
    assert header(tmp_path / "camera.jpg")[1] == "MPO"
    loaded = as_hwc(load_image(tmp_path / "camera.jpg"))
    assert np.abs(loaded - smooth8(16, 24) / 255).mean() < 0.01


# -- in-memory sources ----------------------------------------------------------------------------
def test_pil_image_bytes_and_file_object_match_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "x.png", np.dstack([rgb8(4, 5), np.full((4, 5), 77, np.uint8)]), "PNG")
    expected = load_image(path)
    with Image.open(path) as lazy:  # not yet decoded
        assert torch.equal(load_image(lazy), expected)
    assert torch.equal(load_image(path.read_bytes()), expected)
    with open(path, "rb") as stream:
        assert torch.equal(load_image(stream), expected)
    assert torch.equal(load_image(str(path)), expected)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array([[0, 255], [51, 102]], np.uint8), np.array([[0, 1], [0.2, 0.4]])),
        (np.array([[[0], [255]]], np.uint8), np.array([[0, 1]])),
        (np.array([[0, 65535, 257]], np.uint16), np.array([[0, 1, 1 / 255]])),
        (np.array([[True, False]]), np.array([[1, 0]])),
        (np.array([[0.25, 1.0]], np.float64), np.array([[0.25, 1]])),
        (np.array([[0.5, 0.0]], np.float16), np.array([[0.5, 0]])),
    ],
)
def test_gray_arrays_of_each_dtype(array: np.ndarray, expected: np.ndarray) -> None:
    loaded = as_hwc(load_image(array))
    for channel in range(3):
        np.testing.assert_allclose(loaded[:, :, channel], expected, atol=1e-7)


def test_color_arrays_and_rgba_arrays() -> None:
    pixels = rgb8(3, 4)
    np.testing.assert_array_equal(as_hwc(load_image(pixels)), u8(pixels))
    alpha = np.array([[0, 255, 128, 64]] * 3, np.uint8)
    loaded = as_hwc(load_image(np.dstack([pixels, alpha])))
    np.testing.assert_allclose(loaded, over_white(pixels / 255, alpha[:, :, None] / 255), atol=1e-6)
    floats = pixels / 255.0
    np.testing.assert_allclose(as_hwc(load_image(floats)), floats, atol=1e-7)


def test_result_never_shares_memory_with_the_input() -> None:
    chw = torch.rand(3, 4, 5)
    hwc_view = chw.numpy().transpose(
        1, 2, 0
    )  # an HWC float32 view whose CHW copy would be contiguous
    for source in (chw, hwc_view, chw.numpy().transpose(1, 2, 0).copy()):
        loaded = load_image(source)
        before = loaded.clone()
        if isinstance(source, torch.Tensor):
            source.mul_(0.5)
        else:
            source *= 0.5
        assert torch.equal(loaded, before)
        assert not np.shares_memory(loaded.numpy(), chw.numpy())


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x,
        lambda x: x[:1],
        lambda x: x[0],
        lambda x: x.unsqueeze(0),
        lambda x: (x * 255).round().to(torch.uint8),
        lambda x: x.to(torch.float64),
        lambda x: x.to(torch.bfloat16),
        lambda x: x.clone().requires_grad_(True),
    ],
    ids=["chw", "1hw", "hw", "batch-of-one", "uint8", "float64", "bfloat16", "requires-grad"],
)
def test_tensor_sources(make: object) -> None:
    base = quantize_8bit(torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(0)))
    source = make(base)  # type: ignore[operator]
    loaded = load_image(source)
    assert loaded.shape == (3, 5, 6) and loaded.dtype == torch.float32 and not loaded.requires_grad
    reference = source.detach().float()
    if source.dtype == torch.uint8:
        reference = reference / 255
    reference = reference.reshape(-1, 5, 6).expand(3, 5, 6)
    torch.testing.assert_close(
        loaded, reference, atol=4e-3 if source.dtype == torch.bfloat16 else 1e-7, rtol=0
    )


# -- bad input: one clear reason each -----------------------------------------------------------------
def assert_reason(source: object, *keywords: str, name: str | None = None) -> ImageReadError:
    error = read_error(source) if name is None else read_error(source, name=name)
    message = str(error)
    expected_name = name if name is not None else source_name(source)
    assert expected_name in message, message
    for keyword in keywords:
        assert keyword in message, message
    return error


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert_reason(tmp_path / "nope.jpg", "no such file")
    assert_reason(str(tmp_path / "not_a_folder.txt" / "x.png"), "no such file")
    assert_reason(tmp_path, "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    assert_reason(tmp_path / "empty.png", "empty file")
    assert_reason(b"", "empty file")


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_files_are_refused(tmp_path: Path, image_format: str, keep: float) -> None:
    buffer = io.BytesIO()
    Image.fromarray(rgb8(48, 64)).save(buffer, image_format)
    data = buffer.getvalue()
    path = tmp_path / f"cut.{image_format.lower()}"
    path.write_bytes(data[: int(len(data) * keep)])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert_reason(path, "truncated or corrupt")


@pytest.mark.parametrize(
    ("content", "keyword"),
    [
        (
            np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
            "unrecognised image format",
        ),
        (
            b"Hello, this is a plain text file.\nNothing to see.\n" * 20,
            "not an image (looks like text)",
        ),
        (
            b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not found</body></html>\n",
            "looks like HTML",
        ),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "Git LFS"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>\n', "SVG"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF images are not supported"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "AVIF images are not supported"),
        ("Ünïcødé text, not pixels — 日本語\n".encode() * 10, "looks like text"),
    ],
    ids=["random", "text", "html", "git-lfs", "svg", "pdf", "avif", "utf8"],
)
def test_files_that_are_not_images(tmp_path: Path, content: bytes, keyword: str) -> None:
    path = tmp_path / "picture.jpg"
    path.write_bytes(content)
    assert_reason(path, keyword)


def test_decompression_bomb_is_refused_from_the_header_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = []
    original_load = ImageFile.ImageFile.load
    monkeypatch.setattr(
        ImageFile.ImageFile, "load", lambda self: decoded.append(self) or original_load(self)
    )
    # 1e10 pixels (PIL itself refuses), 1e8 (PIL only warns; the warning must not escape)
    # and just over MAX_PIXELS (PIL is silent; convlens must still refuse).
    cases = [
        (100_000, 100_000, "100000x100000 = 10,000,000,000 pixels"),
        (10_000, 10_000, "10000x10000 = 100,000,000 pixels"),
        (8_001, 8_001, "8001x8001"),
    ]
    for width, height, shown in cases:
        path = tmp_path / f"bomb{width}.png"
        tiny = np.zeros((1, 1, 3), np.uint8)
        path.write_bytes(png_bytes(tiny, color_type=2, bit_depth=8, ihdr_size=(width, height)))
        start = time.perf_counter()
        error = assert_reason(path, "too large", shown, f"{MAX_PIXELS:,}")
        assert time.perf_counter() - start < 2.0
        assert "MAX_PIXELS" in error.reason
    assert decoded == []


def test_max_pixels_can_be_raised_on_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "x.png", rgb8(10, 10), "PNG")
    monkeypatch.setattr(images_module, "MAX_PIXELS", 99)
    assert_reason(path, "too large", "10x10")
    monkeypatch.setattr(images_module, "MAX_PIXELS", 100)
    assert load_image(path).shape == (3, 10, 10)


@pytest.mark.parametrize(
    ("image_format", "keyword"),
    [
        ("GIF", "animated image with 3 frames"),
        ("PNG", "animated image with 3 frames"),
        ("WEBP", "animated image with 3 frames"),
        ("TIFF", "multi-page TIFF with 3 pages"),
    ],
)
def test_multi_frame_images_are_refused(tmp_path: Path, image_format: str, keyword: str) -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / f"many.{image_format.lower()}"
    frames[0].save(path, image_format, save_all=True, append_images=frames[1:])
    error = assert_reason(path, keyword)
    assert "extract a" in error.reason
    with Image.open(path) as image:  # the fix the message gives works
        image.seek(1)
        frame = image.convert("RGB")
    assert load_image(frame).shape == (3, 8, 8)


@pytest.mark.parametrize(
    "data",
    [
        png_bytes(np.zeros((1, 1, 3), np.uint8), color_type=2, bit_depth=8, ihdr_size=(0, 5)),
        b"GIF89a\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 40,
        b"P6\n0 4\n255\n" + b"\x00" * 40,
    ],
    ids=["png", "gif", "ppm"],
)
def test_zero_sized_images(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "zero.img"
    path.write_bytes(data)
    assert_reason(path, "zero width or height")


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "secret.png", rgb8(2, 2), "PNG")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(images_module, "open", refuse, raising=False)
    assert_reason(path, "permission denied")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_permission_denied_for_real(tmp_path: Path) -> None:
    path = write(tmp_path / "secret.png", rgb8(2, 2), "PNG")
    path.chmod(0)
    try:
        assert_reason(path, "permission denied")
    finally:
        path.chmod(0o644)


def test_fifo_is_not_read(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.png")
    assert_reason(tmp_path / "pipe.png", "not a regular file")


@pytest.mark.parametrize(
    ("source", "keywords"),
    [
        (np.zeros((5, 4, 5), np.uint8), ("<array 5x4x5>", "expected an array of shape")),
        (np.zeros((3, 8, 9), np.float32), ("<array 3x8x9>", "channels first")),
        (np.zeros((2, 4, 4, 3), np.uint8), ("<array 2x4x4x3>", "a batch")),
        (np.zeros((0, 4, 3), np.uint8), ("<array 0x4x3>", "no pixels")),
        (np.full((2, 2), 1.5), ("<array 2x2>", "[0, 1]", "max 1.5")),
        (np.full((2, 2), -0.1, np.float32), ("[0, 1]", "min -0.1")),
        (np.array([[0.5, np.nan]]), ("NaN",)),
        (np.zeros((2, 2), np.int64), ("unsupported dtype int64", "uint8")),
        (torch.zeros(5, 4, 4), ("<tensor 5x4x4>", "expected a tensor of shape")),
        (torch.zeros(2, 3, 4, 4), ("<tensor 2x3x4x4>", "a batch of 2")),
        (torch.zeros(4, 4, 3), ("channels last",)),
        (torch.zeros(3, 0, 4), ("no pixels",)),
        (torch.full((3, 2, 2), 255.0), ("[0, 1]", "divide 0-255 data by 255")),
        (torch.zeros(3, 2, 2, dtype=torch.int32), ("unsupported dtype int32",)),
        (torch.zeros(3, 2, 2, dtype=torch.complex64), ("unsupported dtype complex64",)),
        ([[0, 1], [1, 0]], ("<list>", "unsupported type list")),
    ],
)
def test_bad_arrays_tensors_and_types(source: object, keywords: tuple[str, ...]) -> None:
    assert_reason(source, *keywords)


def test_custom_name_is_used_in_messages(tmp_path: Path) -> None:
    assert_reason(tmp_path / "gone.png", "no such file", name="sample:gone")
    error = read_error(tmp_path / "gone.png", name="sample:gone")
    assert error.source == "sample:gone" and str(error).startswith("sample:gone: ")


def test_errors_are_bad_input_errors_and_value_errors(tmp_path: Path) -> None:
    error = read_error(tmp_path / "gone.png")
    assert isinstance(error, BadInputError) and isinstance(error, ValueError)


def test_source_name() -> None:
    assert source_name("a/b.png") == "a/b.png"
    assert source_name(Path("a") / "b.png") == os.path.join("a", "b.png")
    assert source_name(Image.new("RGB", (2, 2))) == "<PIL image>"
    assert source_name(np.zeros((3, 2, 3))) == "<array 3x2x3>"
    assert source_name(torch.zeros(3, 2, 2)) == "<tensor 3x2x2>"
    assert source_name(b"abc") == "<3 bytes>"
    assert source_name(42) == "<int>"


# -- saving and 8-bit quantisation ---------------------------------------------------------------
def test_quantize_8bit_matches_float64_reference_and_rounds_half_up() -> None:
    x = torch.rand(10_000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    reference = np.floor(x.numpy() * 255 + 0.5) / 255
    np.testing.assert_array_equal(quantize_8bit(x).numpy(), reference)
    # Exact half levels: half-up gives k + 1 where round-half-to-even would give k for even k.
    halves = torch.tensor([(k + 0.5) / 255 for k in range(255)], dtype=torch.float64)
    exact = (halves * 255 - torch.arange(255) == 0.5).nonzero().flatten()
    assert any(int(k) % 2 == 0 for k in exact)  # the check can tell the two rules apart
    torch.testing.assert_close(
        quantize_8bit(halves)[exact] * 255, (exact + 1).double(), atol=1e-9, rtol=0
    )


def test_quantize_8bit_keeps_dtype_and_device_and_drops_autograd() -> None:
    x = torch.tensor([[-0.2, 0.0, 0.3, 1.0, 1.7]], requires_grad=True)
    q = quantize_8bit(x)
    assert q.dtype == torch.float32 and q.device == x.device and not q.requires_grad
    torch.testing.assert_close(
        q * 255, torch.tensor([[0.0, 0.0, 77.0, 255.0, 255.0]]), atol=1e-4, rtol=0
    )
    assert quantize_8bit(x.detach().half()).dtype == torch.float16
    assert torch.equal(quantize_8bit(q), q)
    with pytest.raises(BadInputError, match="float tensor"):
        quantize_8bit(torch.zeros(2, dtype=torch.uint8))


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".ppm", ".webp"])
@pytest.mark.parametrize("channels", [3, 1])
def test_save_load_round_trip_is_exact_on_quantised_values(
    tmp_path: Path, suffix: str, channels: int
) -> None:
    if suffix == ".ppm" and channels == 1:
        suffix = ".pgm"
    x = torch.rand(channels, 13, 17, generator=torch.Generator().manual_seed(channels))
    q = quantize_8bit(x)
    written = save_image(x, tmp_path / f"out{suffix}")  # quantised on the way
    loaded = load_image(written)
    assert torch.equal(loaded, q.expand(3, -1, -1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out{suffix}"]  # no temporary left


def test_saved_levels_are_round_half_up(tmp_path: Path) -> None:
    x = torch.tensor([0.5 / 255, 2.5 / 255, 0.5, 1.0, 0.0, 254.49 / 255]).reshape(1, 1, 6)
    written = save_image(x, tmp_path / "levels.png")
    with Image.open(written) as image:
        np.testing.assert_array_equal(np.asarray(image).reshape(-1), [1, 3, 128, 255, 0, 254])


def test_save_jpeg_and_default_png_suffix(tmp_path: Path) -> None:
    x = torch.from_numpy(smooth8(24, 32)).permute(2, 0, 1) / 255.0
    jpeg = save_image(x, tmp_path / "photo.jpg")
    assert header(jpeg)[1] == "JPEG"
    assert (load_image(jpeg) - x).abs().mean() < 0.01
    plain = save_image(x, tmp_path / "sub" / "dir" / "plain")
    assert plain == tmp_path / "sub" / "dir" / "plain.png" and header(plain)[1] == "PNG"
    assert torch.equal(load_image(plain), x)


def test_saved_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    written = save_image(torch.zeros(3, 2, 2), tmp_path / "p.png")
    (tmp_path / "plain").write_bytes(b"")
    assert written.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


def test_save_is_atomic_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "result.png"
    save_image(torch.ones(3, 4, 4), target)
    old = target.read_bytes()

    def half_write(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        fp.write(b"\x89PNG partial")  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # the worst moment: killed half way through

    monkeypatch.setattr(Image.Image, "save", half_write)
    with pytest.raises(KeyboardInterrupt):
        save_image(torch.zeros(3, 4, 4), target)
    monkeypatch.undo()
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.png"]

    def no_rename(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(images_module.os, "replace", no_rename)
    with pytest.raises(
        BadInputError, match=re.escape("result.png: cannot write the image (permission denied)")
    ):
        save_image(torch.zeros(3, 4, 4), target)
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.png"]


@pytest.mark.parametrize(
    ("pixels", "name", "match"),
    [
        (torch.zeros(2, 3, 4, 4), "x.png", "shape \\(2, 3, 4, 4\\).*x\\[i\\]"),
        (torch.zeros(4, 4), "x.png", "shape \\(4, 4\\)"),
        (torch.full((3, 2, 2), 1.2), "x.png", "must be in \\[0, 1\\].*clamp"),
        (torch.full((3, 2, 2), float("nan")), "x.png", "NaN"),
        (torch.zeros(3, 2, 2), "x.xyz", "cannot save an image as '.xyz'"),
        (torch.zeros(3, 2, 2), "x.pgm", "grayscale"),
        (np.zeros((2, 2, 3)), "x.png", "takes a torch tensor"),
    ],
)
def test_save_refuses_bad_input(tmp_path: Path, pixels: object, name: str, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        save_image(pixels, tmp_path / name)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_save_into_a_directory_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(
        BadInputError, match=re.escape("taken.png: cannot write the image (is a directory")
    ):
        save_image(torch.zeros(3, 2, 2), tmp_path / "taken.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.png"]


# -- finding images -------------------------------------------------------------------------------
def test_find_images_walks_sorted_and_skips_hidden_and_non_images(tmp_path: Path) -> None:
    names = [
        "b.png", "A.JPG", "notes.txt", ".hidden.png", ".cache/x.png", "sub/c.webp", "sub/deeper/d.tiff",
        "sub/e.gif", "sub/.git/f.png", "noext", "z.jpeg", "y.Ppm", "w.pgm", "v.bmp", "u.tif",
    ]  # fmt: skip
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = find_images([tmp_path])
    expected = ["A.JPG", "b.png", "sub/c.webp", "sub/deeper/d.tiff", "sub/e.gif"]
    expected += ["u.tif", "v.bmp", "w.pgm", "y.Ppm", "z.jpeg"]
    assert [p.relative_to(tmp_path).as_posix() for p in found] == expected
    assert found == sorted(found)
    # Named files are kept whatever their suffix, in the order given; one path alone works too.
    mixed = find_images([tmp_path / "noext", str(tmp_path / "sub")])
    expected = ["noext", "sub/c.webp", "sub/deeper/d.tiff", "sub/e.gif"]
    assert [p.relative_to(tmp_path).as_posix() for p in mixed] == expected
    assert find_images(str(tmp_path / "sub" / "deeper")) == [tmp_path / "sub" / "deeper" / "d.tiff"]


def test_find_images_missing_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ImageReadError, match="no such file or directory") as info:
        find_images([tmp_path, missing])
    assert info.value.source == missing


def test_image_extensions_are_lower_case_suffixes() -> None:
    assert {
        ".jpg",
        ".jpeg",
        ".png",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".gif",
        ".ppm",
        ".pgm",
    } == IMAGE_EXTENSIONS
