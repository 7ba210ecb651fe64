"""Image input and output: read what the user has into image space, write pixels as 8-bit files.

Image space (DESIGN.md, "Spaces") is a float32 RGB tensor ``(3, H, W)`` in [0, 1] on the CPU,
at the image's own size. :func:`load_image` reads files (JPEG, PNG, WebP, BMP, TIFF, GIF,
PPM/PGM, detected from the content, never from the suffix), PIL images, numpy arrays, torch
tensors and raw bytes into it. Anything it cannot read raises
:class:`~convlens.errors.ImageReadError` naming the source and a short reason; no other
exception type escapes, and no PIL warning either.

:func:`save_image` writes pixels as an 8-bit file atomically, and :func:`quantize_8bit` gives
the exact values such a file holds, so an image saved at model resolution and read back is
classified exactly as it was when saved (DESIGN.md, "Round trip").

Choices worth knowing:

- Transparent images are composited over a **white** background. Black would darken
  anti-aliased edges and turn the transparent background of logos and cut-outs into a
  black frame the network would see as content.
- 16-bit files keep their 16-bit precision (grayscale PNG/TIFF/PGM, and RGB, RGBA and
  grayscale-with-alpha PNG and RGB(A) TIFF), although PIL itself would reduce the colour
  ones to 8 bits. 16-bit colour PPM files are read at 8 bits.
- The EXIF orientation is honoured, as :func:`PIL.ImageOps.exif_transpose` would apply it.
- Colour profiles are not applied: pixel values are used as stored, as torchvision does.
- Images over :data:`MAX_PIXELS` are refused from the header, before decoding.
"""

from __future__ import annotations

import codecs
import functools
import io
import os
import re
import stat
import struct
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeAlias

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from convlens.atomic import atomic_open
from convlens.errors import BadInputError, ImageReadError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "ImageSource",
    "find_images",
    "load_image",
    "quantize_8bit",
    "save_image",
    "source_name",
]

#: Lower-case suffixes :func:`find_images` treats as images (GIF only if single-frame).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}
)

#: Larger images are refused from their header, before any pixel is decoded
#: (a guard against decompression bombs). Raise it on the module if you need to.
MAX_PIXELS: int = 64_000_000

#: Everything :func:`load_image` accepts.
ImageSource: TypeAlias = (
    str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor | bytes | IO[bytes]
)

# PIL decoders load_image uses. Content decides among them; the suffix never does.
# (PIL's JPEG decoder also opens MPO: camera JPEGs that carry extra preview pictures.)
_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM")
_READABLE = "JPEG, PNG, WebP, BMP, TIFF, GIF, PPM/PGM"
_SNIFF_BYTES = 2048

_SAVE_FORMATS = {
    ".bmp": "BMP",
    ".gif": "GIF",
    ".jpeg": "JPEG",
    ".jpg": "JPEG",
    ".pgm": "PPM",
    ".png": "PNG",
    ".ppm": "PPM",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
# JPEG stays lossy (quality 95); WebP is written lossless so it round-trips like PNG.
_SAVE_OPTIONS: dict[str, dict[str, Any]] = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}


# -- names ------------------------------------------------------------------------------------
def source_name(source: object) -> str:
    """Return a short display name for an image source, for messages and results.

    Parameters
    ----------
    source
        Anything :func:`load_image` accepts (or not).

    Returns
    -------
    str
        The path as given; ``'<PIL image>'``; ``'<array 3x2x3>'`` or ``'<tensor 3x2x3>'``
        with the shape; ``'<N bytes>'``; a file object's name; otherwise ``'<type name>'``.
    """
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    if isinstance(source, Image.Image):
        return "<PIL image>"
    if isinstance(source, np.ndarray):
        return f"<array {_shape_text(source.shape)}>"
    if isinstance(source, torch.Tensor):
        return f"<tensor {_shape_text(tuple(source.shape))}>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    name = getattr(source, "name", None)
    if hasattr(source, "read") and isinstance(name, str):
        return name
    return f"<{type(source).__name__}>"


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape) if shape else "scalar"


# -- loading ----------------------------------------------------------------------------------
def load_image(source: ImageSource, *, name: str | None = None) -> torch.Tensor:
    """Read one image into image space: a float32 RGB tensor ``(3, H, W)`` in [0, 1] on the CPU.

    Grayscale is repeated into three channels. Transparent pixels are composited over a
    white background (black would darken soft edges and frame cut-outs in black). The EXIF
    orientation is applied. The result never shares memory with the caller's data.

    Parameters
    ----------
    source
        One of:

        - a path (``str`` or ``os.PathLike``) to a JPEG, PNG (8 or 16 bit, any colour
          type), WebP, BMP, TIFF (8 or 16 bit), single-frame GIF, PPM or PGM file; the
          format is detected from the content, so a wrong or missing suffix is fine;
        - a ``PIL.Image.Image``;
        - a numpy array ``(H, W)``, ``(H, W, 1)``, ``(H, W, 2)`` (gray + alpha),
          ``(H, W, 3)`` or ``(H, W, 4)`` of dtype uint8 (0-255), uint16 (0-65535), bool,
          or float with values in [0, 1];
        - a torch tensor ``(3, H, W)``, ``(1, H, W)``, ``(H, W)``, or a batch of one
          ``(1, 3, H, W)`` / ``(1, 1, H, W)``, float in [0, 1], uint8, uint16 or bool, on
          any device;
        - the bytes of an image file, or a binary file object.
    name
        Name used in error messages instead of :func:`source_name` (e.g. ``sample:cat``).

    Returns
    -------
    torch.Tensor
        float32, shape ``(3, H, W)``, values in [0, 1], on the CPU, not requiring grad.

    Raises
    ------
    ImageReadError
        The source cannot be read; the message names it and says why (missing, a folder,
        empty, truncated or corrupt, not an image, animated, over :data:`MAX_PIXELS`,
        permission denied, wrong array shape or value range, ...).

    Examples
    --------
    >>> load_image(np.zeros((2, 3), np.uint8)).shape
    torch.Size([3, 2, 3])
    """
    label = name if name is not None else source_name(source)
    if isinstance(source, torch.Tensor):
        array = _tensor_to_array(source, label)
    elif isinstance(source, np.ndarray):
        array = _check_array(source, label)
    elif isinstance(source, (str, os.PathLike)):
        array = _read_path(source, label)
    elif isinstance(source, Image.Image):
        array = _read_pil(source, label)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        array = _read_bytes(bytes(source), label)
    elif hasattr(source, "read"):
        array = _read_bytes(_read_all(source, label), label)
    else:
        raise ImageReadError(
            label,
            f"unsupported type {type(source).__name__}; pass a path, PIL image, numpy array or torch tensor",
        )
    return _to_image_space(array, label)


def _read_all(stream: Any, label: str) -> bytes:
    try:
        data = stream.read()
    except Exception as exc:
        raise ImageReadError(
            label, f"cannot read the file object ({_exception_text(exc)})"
        ) from exc
    if not isinstance(data, bytes):
        raise ImageReadError(label, "file object is not binary; open it with mode 'rb'")
    return data


def _read_path(source: str | os.PathLike[str], label: str) -> np.ndarray:
    path = os.fspath(source)
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ImageReadError(label, _os_reason(exc)) from exc
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(label, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise ImageReadError(label, "not a regular file")
    if info.st_size == 0:
        raise ImageReadError(label, "empty file (0 bytes)")
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by the with below; open errors get their own reason
    except OSError as exc:
        raise ImageReadError(label, _os_reason(exc)) from exc
    with stream:
        return _read_stream(stream, label)


def _read_bytes(data: bytes, label: str) -> np.ndarray:
    if not data:
        raise ImageReadError(label, "empty file (0 bytes)")
    return _read_stream(io.BytesIO(data), label)


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return "no such file or directory"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, ValueError):
        return f"invalid path ({exc})"
    strerror = getattr(exc, "strerror", None)
    return f"cannot open ({(strerror or _exception_text(exc)).lower()})"


def _exception_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 100 else text[:97] + "..."


def _read_stream(stream: IO[bytes], label: str) -> np.ndarray:
    head = stream.read(_SNIFF_BYTES)
    stream.seek(0)
    if not head:
        raise ImageReadError(label, "empty file (0 bytes)")

    def reopen(image_format: str) -> ImageFile.ImageFile:
        stream.seek(0)
        return Image.open(stream, formats=(image_format,))

    # PIL reports odd files with warnings (corrupt EXIF, palette transparency, ...);
    # tests run with warnings as errors and library code stays quiet.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = Image.open(stream, formats=_FORMATS)
        except Image.DecompressionBombError as exc:
            raise ImageReadError(label, _bomb_reason_from(exc, head)) from exc
        except UnidentifiedImageError as exc:
            raise ImageReadError(label, _unidentified_reason(head)) from exc
        except Exception as exc:
            raise ImageReadError(
                label, f"truncated or corrupt image data ({_exception_text(exc)})"
            ) from exc
        with image:
            return _decode(image, label, reopen)


def _read_pil(image: Image.Image, label: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode(image, label, None)


def _decode(
    image: Image.Image, label: str, reopen: Callable[[str], ImageFile.ImageFile] | None
) -> np.ndarray:
    """Check the header, then decode fully (truncation surfaces here, not later)."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageReadError(label, _too_large(f"{width}x{height} = {width * height:,} pixels"))
    if width <= 0 or height <= 0:
        raise ImageReadError(label, f"image has zero width or height ({width}x{height})")
    try:
        frames = getattr(image, "n_frames", 1)
        if frames > 1 and image.format != "MPO":  # MPO: the first picture is the photo
            raise ImageReadError(label, _frames_reason(image.format, frames))
        # a reopenable image came from Image.open: a file image, with tiles to read
        plan = (
            _precision_plan(image)
            if reopen is not None and isinstance(image, ImageFile.ImageFile)
            else None
        )
        image.load()
        orientation = _orientation(image)
        array = _pil_array(image)
        if plan is not None and reopen is not None:
            array = plan(image, array, reopen)
        array = _with_color_key(image, array)
        return _orient(array, orientation)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(label, _bomb_reason_from(exc, b"")) from exc
    except MemoryError as exc:
        raise ImageReadError(
            label, f"not enough memory to decode a {width}x{height} image"
        ) from exc
    except Exception as exc:
        raise ImageReadError(
            label, f"truncated or corrupt image data ({_exception_text(exc)})"
        ) from exc


def _too_large(size: str) -> str:
    limit = f"over the MAX_PIXELS limit of {MAX_PIXELS:,} (decompression-bomb guard)"
    return f"image too large: {size}, {limit}; downscale it first"


def _bomb_reason_from(exc: Exception, head: bytes) -> str:
    """PIL refused a huge image in Image.open: state its size from the header if we can."""
    for magic, name in (*_SUPPORTED_MAGIC, (b"BM", "BMP"), (b"P", "PPM/PGM")):
        size = _header_size(head, name) if head.startswith(magic) else None
        if size is not None:
            return _too_large(f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels")
    found = re.search(r"(\d+) pixels", str(exc))
    return _too_large(f"{int(found.group(1)):,} pixels" if found else "more pixels than PIL allows")


def _frames_reason(image_format: str | None, frames: int) -> str:
    if image_format == "TIFF":
        return f"multi-page TIFF with {frames} pages; convlens reads still images — extract a page first"
    return (
        f"animated image with {frames} frames; convlens reads still images — extract a frame first"
    )


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)  # the EXIF Orientation tag
    except Exception:  # corrupt EXIF: the pixels are still good
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# The eight EXIF orientations, as the PIL transposes exif_transpose applies (2: FLIP_LEFT_RIGHT,
# 3: ROTATE_180, 4: FLIP_TOP_BOTTOM, 5: TRANSPOSE, 6: ROTATE_270, 7: TRANSVERSE, 8: ROTATE_90),
# on numpy arrays so that 16-bit data, which PIL cannot hold in colour, turns the same way.
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    return _ORIENT[orientation](array)


def _pil_array(image: Image.Image) -> np.ndarray:
    """Pixels of a loaded PIL image as uint8, uint16, bool or float32, (H, W) or (H, W, C)."""
    mode = image.mode
    if mode in ("1", "L", "LA", "RGB", "RGBA", "F") or mode.startswith("I;16"):
        return np.asarray(image)
    if mode == "I":  # 32-bit integers: 16-bit PGM (PIL scales it to 0-65535) or TIFF
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"32-bit integer pixels outside 0-65535 (min {values.min()}, max {values.max()})"
            )
        return values.astype(np.uint16)
    if mode in (
        "P",
        "PA",
        "La",
        "RGBa",
    ):  # palettes may carry transparency; La/RGBa are premultiplied
        return np.asarray(image.convert("RGBA"))
    return np.asarray(
        image.convert("RGB")
    )  # CMYK (Adobe inversion handled by PIL), YCbCr, LAB, HSV


def _with_color_key(image: Image.Image, array: np.ndarray) -> np.ndarray:
    """Turn a PNG/GIF colour-key transparency (one gray value or RGB triple) into alpha."""
    key = image.info.get("transparency")
    gray = array.ndim == 2 and image.mode in ("L", "I", "I;16", "I;16B", "I;16L")
    rgb = array.ndim == 3 and array.shape[2] == 3 and image.mode == "RGB"
    if isinstance(key, int) and gray:
        opaque = array != key
    elif isinstance(key, tuple) and len(key) == 3 and rgb:
        opaque = (array != np.asarray(key)).any(axis=2)
    else:
        return array
    top = np.iinfo(array.dtype).max if array.dtype.kind == "u" else 1
    alpha = np.where(opaque, top, 0).astype(array.dtype)
    return np.dstack([array, alpha])


# -- 16-bit colour --------------------------------------------------------------------------
# PIL holds colour images at 8 bits per channel: decoding a 16-bit RGB(A) PNG or TIFF keeps
# the high byte of each sample. The low bytes come from a second decode of the same data
# with the opposite byte order (same bytes per pixel, so PNG unfiltering is identical).
# A one-pixel probe checks PIL's unpackers before that trick is trusted; if it fails, the
# image is read at 8 bits. A 16-bit gray+alpha PNG is decoded as raw 8-bit RGBA (also 4
# bytes per pixel), which simply holds all four bytes.
_Plan = Callable[[Image.Image, np.ndarray, Callable[[str], ImageFile.ImageFile]], np.ndarray]


def _tile_rawmodes(image: ImageFile.ImageFile) -> set[str]:
    modes = set()
    for tile in image.tile:
        args = tile[3]
        rawmode = (
            args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else None
        )
        if not isinstance(rawmode, str):
            return set()
        modes.add(rawmode)
    return modes


def _with_rawmode(tile: Any, rawmode: str) -> Any:
    args = tile[3]
    new_args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
    return tile._replace(args=new_args) if hasattr(tile, "_replace") else (*tile[:3], new_args)


def _low_byte_rawmode(rawmode: str, mode: str) -> str | None:
    base, sep, order = rawmode.partition(";16")
    if not sep or base != mode or mode not in ("RGB", "RGBA") or order not in ("B", "L", "N"):
        return None
    if order == "N":
        order = "L" if sys.byteorder == "little" else "B"
    swapped = f"{base};16{'L' if order == 'B' else 'B'}"
    return swapped if _unpackers_split_bytes(rawmode, swapped, mode) else None


@functools.cache
def _unpackers_split_bytes(rawmode: str, swapped: str, mode: str) -> bool:
    """Whether ``rawmode`` yields the high bytes and ``swapped`` the low bytes (one-pixel probe)."""
    values = np.array([0x1234 + 0x0111 * k for k in range(len(mode))], dtype=np.uint16)
    order = rawmode[-1]
    byte_order = {"B": ">", "L": "<"}.get(order, "=")
    data = values.astype(f"{byte_order}u2").tobytes()
    try:
        high = np.asarray(Image.frombytes(mode, (1, 1), data, "raw", rawmode)).astype(np.uint16)
        low = np.asarray(Image.frombytes(mode, (1, 1), data, "raw", swapped)).astype(np.uint16)
    except Exception:
        return False
    return bool(np.array_equal((high << 8 | low).reshape(-1), values))


def _precision_plan(image: ImageFile.ImageFile) -> _Plan | None:
    """Before decoding: how to recover 16-bit colour that PIL would reduce to 8 bits."""
    rawmodes = _tile_rawmodes(image)
    if len(rawmodes) != 1 or image.format not in ("PNG", "TIFF"):
        return None
    (rawmode,) = rawmodes
    if rawmode == "LA;16B" and image.mode == "RGBA":
        image.tile = [_with_rawmode(tile, "RGBA") for tile in image.tile]
        return _gray_alpha_16
    swapped = _low_byte_rawmode(rawmode, image.mode)
    if swapped is None:
        return None

    def combine(
        first: Image.Image, high: np.ndarray, reopen: Callable[[str], ImageFile.ImageFile]
    ) -> np.ndarray:
        with reopen(first.format or "") as second:
            if second.size != first.size or _tile_rawmodes(second) != {rawmode}:
                return high
            second.tile = [_with_rawmode(tile, swapped) for tile in second.tile]
            second.load()
            low = np.asarray(second)
        if low.shape != high.shape:
            return high
        return high.astype(np.uint16) << 8 | low.astype(np.uint16)

    return combine


def _gray_alpha_16(
    image: Image.Image, raw: np.ndarray, reopen: Callable[[str], Image.Image]
) -> np.ndarray:
    wide = raw.astype(np.uint16)
    return np.dstack([wide[..., 0] << 8 | wide[..., 1], wide[..., 2] << 8 | wide[..., 3]])


# -- arrays and tensors -----------------------------------------------------------------------
_ARRAY_SHAPES = "(H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
_TENSOR_SHAPES = "(3, H, W), (1, H, W), (H, W) or a batch of one (1, 3, H, W)"


def _check_array(array: np.ndarray, label: str) -> np.ndarray:
    shape = array.shape
    if array.ndim not in (2, 3) or (array.ndim == 3 and shape[2] not in (1, 2, 3, 4)):
        hint = ""
        if array.ndim == 3 and shape[0] in (1, 3, 4):
            hint = "; channels first? use arr.transpose(1, 2, 0)"
        elif array.ndim == 4:
            hint = "; a batch? pass one image, e.g. arr[0]"
        raise ImageReadError(
            label, f"expected an array of shape {_ARRAY_SHAPES}, got {shape}{hint}"
        )
    if array.size == 0:
        raise ImageReadError(label, f"array has no pixels (shape {shape})")
    return array


def _tensor_to_array(tensor: torch.Tensor, label: str) -> np.ndarray:
    shape = tuple(tensor.shape)
    values = tensor.detach()
    if values.dim() == 4 and shape[0] == 1:
        values = values[0]
    if values.dim() == 2:
        values = values.unsqueeze(0)
    if values.dim() != 3 or values.shape[0] not in (1, 3):
        hint = ""
        if tensor.dim() == 4 and shape[0] > 1:
            hint = f"; a batch of {shape[0]}: pass one image at a time"
        elif tensor.dim() == 3 and shape[2] in (1, 3):
            hint = "; channels last? use x.permute(2, 0, 1)"
        raise ImageReadError(
            label, f"expected a tensor of shape {_TENSOR_SHAPES}, got {shape}{hint}"
        )
    if values.numel() == 0:
        raise ImageReadError(label, f"tensor has no pixels (shape {shape})")
    if values.dtype in (torch.bfloat16, torch.float16):
        values = (
            values.float()
        )  # numpy has no bfloat16; float16 range checks are clearer in float32
    try:
        array = values.cpu().permute(1, 2, 0).numpy()
    except Exception as exc:  # quantised, sparse, meta tensors and other exotica
        raise ImageReadError(label, f"cannot read this tensor ({_exception_text(exc)})") from exc
    return array


def _dtype_reason(dtype: object) -> str:
    return (
        f"unsupported dtype {dtype}; pass uint8 (0-255), uint16 (0-65535), bool, or float in [0, 1]"
    )


def _scaled(array: np.ndarray, label: str) -> np.ndarray:
    """A new C-contiguous float32 array in [0, 1] (``astype`` always copies)."""
    dtype = array.dtype
    if dtype == np.bool_:
        return array.astype(np.float32, order="C")
    if dtype.kind == "u" and dtype.itemsize in (1, 2):
        values = array.astype(np.float32, order="C")
        values /= np.float32(255 if dtype.itemsize == 1 else 65535)
        return values
    if dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ImageReadError(label, "pixel values contain NaN or infinity")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            got = f"got min {low:.4g}, max {high:.4g}"
            fix = "divide 0-255 data by 255, or clamp"
            raise ImageReadError(label, f"float pixel values must be in [0, 1], {got}; {fix}")
        return array.astype(np.float32, order="C")
    raise ImageReadError(label, _dtype_reason(dtype))


def _to_image_space(array: np.ndarray, label: str) -> torch.Tensor:
    """(H, W) or (H, W, C) pixels -> a new float32 (3, H, W) tensor; one float copy when possible."""
    if array.ndim == 2:
        array = array[:, :, None]
    values = _scaled(array.transpose(2, 0, 1), label)
    if values.shape[0] in (2, 4):  # colour + alpha, composited over white
        color, alpha = values[:-1], values[-1:]
        values = color * alpha + (np.float32(1) - alpha)
    if values.shape[0] == 1:
        values = np.repeat(values, 3, axis=0)
    return torch.from_numpy(values)


def _unidentified_reason(head: bytes) -> str:
    """Why PIL could not identify a file, from its first bytes."""
    for magic, name in _SUPPORTED_MAGIC:
        if head.startswith(magic):
            return _header_reason(head, name)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _header_reason(head, "WebP")
    for magic, name in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            return f"{name} images are not supported; convert it to PNG or JPEG (convlens reads {_READABLE})"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return (
            f"AVIF images are not supported; convert it to PNG or JPEG (convlens reads {_READABLE})"
        )
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1"):
        return (
            f"HEIC images are not supported; convert it to PNG or JPEG (convlens reads {_READABLE})"
        )
    text = _as_text(head)
    if text is not None:
        return _text_reason(text)
    if re.match(rb"P[1-6]\s", head):
        return _header_reason(head, "PPM/PGM")
    if head.startswith(b"BM"):
        return _header_reason(head, "BMP")
    return f"unrecognised image format (convlens reads {_READABLE})"


_SUPPORTED_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)
_UNSUPPORTED_MAGIC = (
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"qoif", "QOI"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"v/1\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"DDS ", "DDS"),
)


def _header_size(head: bytes, name: str) -> tuple[int, int] | None:
    try:
        if name == "PNG" and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if name == "GIF":
            return struct.unpack("<HH", head[6:10])
        if name == "BMP":
            if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 core header
                return struct.unpack("<HH", head[18:22])
            width, height = struct.unpack("<ii", head[18:26])
            return width, abs(height)  # negative height: top-down rows
        if name == "PPM/PGM":
            found = re.match(rb"P[1-6](?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)", head)
            return (int(found.group(1)), int(found.group(2))) if found else None
    except struct.error:
        return None
    return None


def _header_reason(head: bytes, name: str) -> str:
    size = _header_size(head, name)
    if size is not None and 0 in size:
        return f"image has zero width or height ({size[0]}x{size[1]})"
    return f"truncated or corrupt image data ({name} header unreadable)"


def _as_text(head: bytes) -> str | None:
    """The start of a file decoded as text, or None if it looks binary."""
    if b"\x00" in head:
        return None
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        ascii_share = sum(32 <= b < 127 or b in b"\t\n\r\f" for b in head) / len(head)
        return head.decode("latin-1") if ascii_share > 0.9 else None
    if not text:
        return None
    printable = sum(ch.isprintable() or ch in "\t\n\r\f" for ch in text) / len(text)
    return text if printable > 0.95 else None


def _text_reason(text: str) -> str:
    start = text.lstrip("\ufeff \t\r\n").lower()
    if start.startswith("version https://git-lfs"):
        return "not an image (a Git LFS pointer file); fetch the real file with `git lfs pull`"
    if "<svg" in start:
        return "not an image convlens can read (an SVG drawing); export it as PNG first"
    if any(tag in start for tag in ("<!doctype html", "<html", "<head", "<body")):
        return "not an image (looks like HTML: a web page saved in place of the image?)"
    return "not an image (looks like text)"


# -- saving -----------------------------------------------------------------------------------
def _levels(pixels: torch.Tensor) -> torch.Tensor:
    """The 8-bit level of each value, ``floor(x * 255 + 0.5)`` (round half up), as floats."""
    work = pixels.detach().to(torch.float64 if pixels.dtype == torch.float64 else torch.float32)
    return work.clamp(0, 1).mul(255).add(0.5).floor()


def quantize_8bit(pixels: torch.Tensor) -> torch.Tensor:
    """Round pixels in [0, 1] to the nearest of the 256 8-bit levels ``k / 255``.

    These are exactly the values :func:`save_image` writes and :func:`load_image` reads
    back, so a quantised image survives a save/load round trip bit for bit. Rounding is
    half up (``floor(x * 255 + 0.5)``); values outside [0, 1] are clamped first.

    Parameters
    ----------
    pixels
        A float tensor of any shape, on any device.

    Returns
    -------
    torch.Tensor
        A new tensor with the same shape, dtype and device, detached from autograd.

    Raises
    ------
    BadInputError
        If ``pixels`` is not a float tensor.
    """
    if not isinstance(pixels, torch.Tensor) or not pixels.is_floating_point():
        got = pixels.dtype if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise BadInputError(f"quantize_8bit takes a float tensor in [0, 1]; got {got}")
    return (_levels(pixels) / 255).to(pixels.dtype)


def save_image(pixels: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Save pixels as an 8-bit image file, atomically.

    Values are quantised like :func:`quantize_8bit` (round half up). The file is written to
    a hidden temporary file in the same folder and then renamed over ``path``, so a reader
    never sees a half-written image and an interrupted save leaves any old file intact.
    Missing parent folders are created.

    Parameters
    ----------
    pixels
        ``(3, H, W)`` (RGB) or ``(1, H, W)`` (grayscale), float in [0, 1] or uint8, any device.
    path
        Destination. The suffix picks the format: ``.png`` (the default, added when the
        name has no suffix), ``.jpg``/``.jpeg`` (quality 95, lossy), ``.webp`` (lossless),
        ``.bmp``, ``.tif``/``.tiff``, ``.gif``, ``.ppm``, ``.pgm`` (grayscale only).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    BadInputError
        If the pixels have the wrong shape, dtype or range, the suffix is unknown, or the
        file cannot be written.
    """
    target = Path(path)
    if not target.suffix:
        target = target.with_suffix(".png")
    image_format = _SAVE_FORMATS.get(target.suffix.lower())
    if image_format is None:
        suffixes = ", ".join(sorted(_SAVE_FORMATS))
        reason = (
            f"cannot save an image as {target.suffix!r}; use one of {suffixes} (.png is lossless)"
        )
        raise BadInputError(f"{target}: {reason}")
    levels = _levels_to_save(pixels, target)
    if target.suffix.lower() == ".pgm" and levels.ndim == 3:
        raise BadInputError(
            f"{target}: a .pgm file holds grayscale; pass (1, H, W) pixels or save as .ppm"
        )
    _write_atomically(Image.fromarray(levels), target, image_format)
    return target


def _levels_to_save(pixels: torch.Tensor, target: Path) -> np.ndarray:
    if not isinstance(pixels, torch.Tensor):
        got = type(pixels).__name__
        raise BadInputError(
            f"{target}: save_image takes a torch tensor (3, H, W) or (1, H, W); got {got}"
        )
    shape = tuple(pixels.shape)
    if pixels.dim() != 3 or shape[0] not in (1, 3) or pixels.numel() == 0:
        hint = "; take one image of a batch with x[i]" if pixels.dim() == 4 else ""
        raise BadInputError(
            f"{target}: cannot save pixels of shape {shape}; pass (3, H, W) or (1, H, W){hint}"
        )
    if pixels.dtype == torch.uint8:
        levels = pixels.detach()
    elif pixels.is_floating_point():
        values = pixels.detach()
        if not torch.isfinite(values).all():
            raise BadInputError(f"{target}: pixels contain NaN or infinity")
        low, high = values.min().item(), values.max().item()
        if low < 0 or high > 1:
            raise BadInputError(
                f"{target}: pixels must be in [0, 1] to save, got min {low:.4g}, max {high:.4g}; clamp them first"
            )
        levels = _levels(values).to(torch.uint8)
    else:
        raise BadInputError(
            f"{target}: cannot save pixels of dtype {pixels.dtype}; pass float in [0, 1] or uint8"
        )
    array = levels.cpu().permute(1, 2, 0).numpy()
    return np.ascontiguousarray(array[:, :, 0] if shape[0] == 1 else array)


def _write_atomically(image: Image.Image, target: Path, image_format: str) -> None:
    try:
        if target.is_dir():
            raise IsADirectoryError(21, "is a directory", str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(target) as stream:
            image.save(stream, format=image_format, **_SAVE_OPTIONS.get(image_format, {}))
    except OSError as exc:
        reason = _os_reason(exc).removeprefix("cannot open (").removesuffix(")")
        raise BadInputError(f"{target}: cannot write the image ({reason})") from exc


# -- finding files ----------------------------------------------------------------------------
def find_images(paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[Path]:
    """Expand files and folders into a list of image paths.

    Folders are searched recursively, in sorted order, for files whose lower-cased suffix
    is in :data:`IMAGE_EXTENSIONS`; hidden files and folders (names starting with ``.``)
    are skipped and symbolic links to folders are not followed. A file named directly is
    kept whatever its suffix (:func:`load_image` detects the format from the content).

    Parameters
    ----------
    paths
        Files and folders, in the order wanted (a single path is also accepted).

    Returns
    -------
    list of pathlib.Path
        The files, each folder's images in sorted order at the folder's position.

    Raises
    ------
    ImageReadError
        If a path does not exist or a folder cannot be listed.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.extend(_images_under(path))
        elif path.exists():
            found.append(path)
        else:
            raise ImageReadError(os.fspath(given), "no such file or directory")
    return found


def _images_under(root: Path) -> list[Path]:
    def fail(exc: OSError) -> None:
        raise ImageReadError(exc.filename or str(root), _os_reason(exc)) from exc

    images: list[Path] = []
    for folder, subfolders, files in os.walk(root, onerror=fail):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        images.extend(
            Path(folder, name)
            for name in files
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        )
    return sorted(images)
