"""Cue-conflict images: the shape of one category with the texture of another.

Geirhos, Rubisch, Michaelis, Bethge, Wichmann & Brendel, "ImageNet-trained CNNs are
biased towards texture; increasing shape bias improves accuracy and robustness", ICLR 2019
(arXiv:1811.12231) made them by style transfer with the shape image as the *content* and a
texture image as the *style*:

    x = argmin_x  alpha * L_content(x, shape) + beta * L_style(x, texture)

(:func:`~convlens.style.transfer.style_transfer`). A model that decides by texture names
the texture's category; one that decides by shape names the shape's.
:func:`make_cue_conflict` writes the authors' layout, which
:func:`convlens.robustness.shape_bias.scan_cue_conflict` reads::

    OUT/<shape category>/<shape><n>-<texture><m>.png      n, m: 1-based index of the source
    OUT/labels.csv                                         path,shape,texture (path relative to OUT)

Inputs are two ImageFolder-style folders, ``SHAPE_DIR/<category>/*`` and
``TEXTURE_DIR/<category>/*``; every (shape, texture) pair whose categories differ is made,
or a seeded subset of them.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convlens.atomic import atomic_write_text
from convlens.data.images import IMAGE_EXTENSIONS, load_image, save_image
from convlens.errors import BadInputError
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance
from convlens.style.transfer import style_transfer
from convlens.types import ModelProtocol

__all__ = ["CueConflictPair", "cue_conflict_pairs", "make_cue_conflict", "scan_categories"]


#: the authors' image size
DEFAULT_SIZE = 224
DEFAULT_STEPS = 200

_EXTENSIONS = frozenset(e.lower() for e in IMAGE_EXTENSIONS)
# the Geirhos file names carry the categories: letters and underscores only, no digits or dashes
_CATEGORY_RE = re.compile(r"^[a-z][a-z_]*$")


@dataclass(frozen=True)
class CueConflictPair:
    """One stimulus to make: the shape image, the texture image and the output's relative path."""

    shape: str
    shape_path: Path
    texture: str
    texture_path: Path
    path: str  # relative to the output folder, with "/"


def scan_categories(folder: str | os.PathLike[str], role: str = "image") -> dict[str, list[Path]]:
    """``FOLDER/<category>/*`` -> ``{category: [image, ...]}`` (sorted; names lower-cased)."""
    root = Path(folder)
    if not root.is_dir():
        raise BadInputError(
            f"{root}: not a folder; the {role} images go in {role.upper()}_DIR/<category>/*.png"
        )
    found: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = sub.name.lower()
        images = sorted(
            p
            for p in sub.iterdir()
            if p.is_file() and p.suffix.lower() in _EXTENSIONS and not p.name.startswith(".")
        )
        if not images:
            continue
        if not _CATEGORY_RE.match(name):
            raise BadInputError(
                f"{sub}: category folder names must be letters and underscores (they go into <shape><n>-<texture><m>.png)"
            )
        if name in found:
            raise BadInputError(
                f"{sub}: category {name!r} appears twice (folder names differ only in case)"
            )
        found[name] = images
    if not found:
        raise BadInputError(
            f"{root}: no {role} images in category subfolders; expected {root}/<category>/*.png"
        )
    return found


def cue_conflict_pairs(
    shapes: dict[str, list[Path]],
    textures: dict[str, list[Path]],
    *,
    pairs: int | None = None,
    include_same: bool = False,
    seed: int = 0,
) -> list[CueConflictPair]:
    """Every (shape image, texture image) pair, minus same-category ones unless
    ``include_same``; with ``pairs``, a seeded random subset of that many (in the same order)."""
    everything = [
        CueConflictPair(s_cat, s_path, t_cat, t_path, f"{s_cat}/{s_cat}{n}-{t_cat}{m}.png")
        for s_cat, s_paths in shapes.items()
        for n, s_path in enumerate(s_paths, start=1)
        for t_cat, t_paths in textures.items()
        for m, t_path in enumerate(t_paths, start=1)
        if include_same or s_cat != t_cat
    ]
    if not everything:
        raise BadInputError(
            "no shape/texture pairs with different categories; add categories or pass include_same=True"
        )
    if pairs is None:
        return everything
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise BadInputError(f"pairs must be a whole number >= 1, got {pairs!r}")
    if pairs >= len(everything):
        return everything
    gen = torch.Generator().manual_seed(seed)
    chosen = sorted(torch.randperm(len(everything), generator=gen)[:pairs].tolist())
    return [everything[i] for i in chosen]


def _write_labels(out: Path, rows: list[CueConflictPair]) -> Path:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "shape", "texture"])
    writer.writerows([r.path, r.shape, r.texture] for r in rows)
    target = out / "labels.csv"
    return atomic_write_text(target, text.getvalue(), newline="")


def make_cue_conflict(
    model: ModelProtocol,
    shape_dir: str | os.PathLike[str],
    texture_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    pairs: int | None = None,
    include_same: bool = False,
    size: int = DEFAULT_SIZE,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    progress: ProgressFn | None = None,
    **style_options: Any,
) -> Result:
    """Make shape-vs-texture images by style transfer and write them with ``labels.csv``.

    Parameters
    ----------
    model
        The convlens ``Model`` whose features define the style transfer.
    shape_dir, texture_dir
        ``<dir>/<category>/*`` image folders (category names: letters and underscores).
    out_dir
        Output folder: ``<shape category>/<shape><n>-<texture><m>.png`` and ``labels.csv``.
    pairs
        Make only a seeded random subset of this many pairs (None: all).
    include_same
        Also pair shapes and textures of the same category (not conflicts; skipped by default).
    size, steps
        Output's longer side and L-BFGS steps of each style transfer.
    seed
        Chooses the subset and seeds each style transfer.
    progress
        ``progress(done, total)`` after each image.
    **style_options
        Passed on to :func:`~convlens.style.transfer.style_transfer` (``alpha``, ``beta``, ...).

    Returns
    -------
    Result
        Kind ``"cue_conflict"``: ``content_loss`` and ``style_loss`` ``(P,)`` of each image;
        ``sources`` are the written files; ``provenance["params"]["labels"]`` the CSV.

    Raises
    ------
    BadInputError
        Missing folders, no images, unreadable images (all checked before anything is
        written), or an output path that is a file. Each image and ``labels.csv`` are
        written atomically; the CSV last, so it lists only images that exist.
    """
    started = time.perf_counter()
    for key in ("content", "styles", "size", "steps", "seed", "progress"):
        if key in style_options:
            raise BadInputError(
                f"make_cue_conflict sets {key!r} itself; pass it as its own argument where there is one"
            )
    shapes = scan_categories(shape_dir, "shape")
    textures = scan_categories(texture_dir, "texture")
    chosen = cue_conflict_pairs(shapes, textures, pairs=pairs, include_same=include_same, seed=seed)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out}: exists and is not a folder")
    # read every image once before any work, so a bad file fails before anything is written
    loaded: dict[Path, torch.Tensor] = {}
    for pair in chosen:
        for path in (pair.shape_path, pair.texture_path):
            if path not in loaded:
                loaded[path] = load_image(path)
    c_losses, s_losses, written = [], [], []
    for i, pair in enumerate(chosen):
        result = style_transfer(
            model,
            loaded[pair.shape_path],
            loaded[pair.texture_path],
            size=size,
            steps=steps,
            seed=seed,
            **style_options,
        )
        target = out / pair.path
        target.parent.mkdir(parents=True, exist_ok=True)
        save_image(result.tensors["image"][0], target)
        written.append(str(target))
        c_losses.append(float(result.tensors["content_loss"][0]))
        s_losses.append(float(result.tensors["style_loss"][0]))
        if progress is not None:
            progress(i + 1, len(chosen))
    labels = _write_labels(out, chosen)
    params = {
        "shape_dir": str(shape_dir),
        "texture_dir": str(texture_dir),
        "out": str(out),
        "labels": str(labels),
        "pairs": len(chosen),
        "requested_pairs": pairs,
        "include_same": include_same,
        "size": size,
        "steps": steps,
        "style_options": style_options,
        "shape_categories": sorted(shapes),
        "texture_categories": sorted(textures),
        "seconds": round(time.perf_counter() - started, 3),
    }
    tensors = {"content_loss": torch.tensor(c_losses), "style_loss": torch.tensor(s_losses)}
    return Result(
        "cue_conflict",
        tensors,
        make_provenance(model, "cue_conflict", params=params, seed=seed),
        sources=written,
    )
