"""A corpus of awkward-but-valid and bad image files, made on the fly (nothing committed)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / max(w, 1), y / max(h, 1), 0.5 + 0.0 * x], axis=-1) * 200
    return np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def make_good(folder: Path) -> list[Path]:
    """Valid files a careless reader gets wrong."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = _photo(60, 80)
    files = []

    def save(name: str, image: Image.Image, **kw: object) -> None:
        image.save(folder / name, **kw)
        files.append(folder / name)

    save("gray.png", Image.fromarray(photo).convert("L"))
    rgba = np.concatenate([photo, np.full((60, 80, 1), 128, np.uint8)], axis=2)
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("palette.png", Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE))
    save("sixteen.png", Image.fromarray(photo[:, :, 0].astype(np.uint16) * 257 + 3))
    save("cmyk.jpg", Image.fromarray(photo).convert("CMYK"), quality=95)
    save("tiny3x2.png", Image.fromarray(_photo(3, 2, 1)))
    save("wide2000x20.png", Image.fromarray(_photo(20, 2000, 2)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    save("rotated.jpg", Image.fromarray(photo), exif=exif, quality=95)
    save("png_named.jpg", Image.fromarray(photo), format="PNG")
    save("no_extension", Image.fromarray(photo), format="JPEG")
    save("image.webp", Image.fromarray(photo), lossless=True)
    save("image.bmp", Image.fromarray(photo))
    save("image.tiff", Image.fromarray(photo))
    return files


def make_bad(folder: Path) -> dict[str, Path]:
    """Files that must each give a one-line error naming them (key: the reason's keyword)."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.fromarray(_photo(60, 80))
    bad: dict[str, Path] = {}
    bad["no such file"] = folder / "missing.jpg"
    (folder / "a_folder.jpg").mkdir()
    bad["directory"] = folder / "a_folder.jpg"
    (folder / "empty.png").write_bytes(b"")
    bad["empty"] = folder / "empty.png"
    photo.save(folder / "whole.jpg", quality=95)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "whole.jpg").unlink()
    bad["truncated"] = folder / "truncated.jpg"
    (folder / "random.png").write_bytes(
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    )
    bad["unrecognised"] = folder / "random.png"
    (folder / "notes.jpg").write_text("just some text, not a picture\n" * 20)
    bad["text"] = folder / "notes.jpg"
    (folder / "page.png").write_text("<!DOCTYPE html><html><body>404 not found</body></html>")
    bad["HTML"] = folder / "page.png"
    (folder / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    bad["pixels"] = folder / "bomb.png"
    frames = [Image.fromarray(_photo(20, 20, s)) for s in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    bad["animated"] = folder / "animated.gif"
    return bad
