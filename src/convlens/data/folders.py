"""Labelled image folders: class subfolders (ImageFolder style), a CSV, or a flat folder.

Three layouts are understood (DESIGN.md, "Labelled folders")::

    pets/281/a.jpg  pets/tabby/b.jpg  pets/n02123045/c.jpg    class subfolders
    labels.csv  ->  path,label / img/a.jpg,tabby / ...          a CSV (header optional)
    photos/a.jpg  photos/b.png                                  flat: unlabelled

Class names (subfolder names and CSV labels) go through the caller's ``resolve_label``,
normally the model's label resolver, so an index ("281"), a WordNet id ("n02123045") or an
unambiguous label ("tabby") all work. Without a resolver, class names must be indices.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from convlens.data.images import IMAGE_EXTENSIONS
from convlens.errors import BadInputError, TargetError

__all__ = ["LabelledItem", "scan_labelled"]

# Normalised once, so the check works whether the set spells ".jpg" or "jpg".
_EXTENSIONS = frozenset("." + ext.lower().lstrip(".") for ext in IMAGE_EXTENSIONS)
# First-row cells that mark a CSV header rather than a data row.
_PATH_HEADERS = frozenset({"path", "file", "filename", "file_name", "image", "image_path"})
_LABEL_HEADERS = frozenset({"label", "class", "target", "class_index", "y"})


@dataclass(frozen=True)
class LabelledItem:
    """One image and its class.

    Parameters
    ----------
    path
        The image file.
    label
        Class index, or None when the image is unlabelled.
    """

    path: Path
    label: int | None = None


def scan_labelled(
    path: str | Path, resolve_label: Callable[[str], int] | None = None
) -> list[LabelledItem]:
    """List the images of a labelled folder, a CSV of ``path,label`` rows or a flat folder.

    Parameters
    ----------
    path
        A folder whose subfolders are classes (named by index, wnid or label); a folder of
        images with no subfolders (unlabelled); or a ``.csv`` file of ``path,label`` rows
        (header optional, relative paths are relative to the CSV's folder, an empty label
        means unlabelled).
    resolve_label
        Turns a class name into a class index, raising :class:`~convlens.errors.TargetError`
        for unknown or ambiguous names (pass the model's label resolver). None: class names
        must be non-negative integers.

    Returns
    -------
    list of LabelledItem
        Folders: sorted by path. CSV: in the file's row order.

    Raises
    ------
    BadInputError
        The path does not exist, holds no images, mixes loose images with class
        subfolders, or names a class (folder or CSV label) that does not resolve; the
        message names the folder or CSV line.
    """
    root = Path(path)
    if not root.exists():
        raise BadInputError(
            f"{root}: no such file or folder; pass a folder of images or a .csv of path,label rows"
        )
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise BadInputError(
                f"{root}: not a folder or a .csv file; pass a folder of images or a .csv of path,label rows"
            )
        return _scan_csv(root, resolve_label)
    return _scan_folder(root, resolve_label)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in _EXTENSIONS


def _visible(folder: Path) -> list[Path]:
    # Hidden entries (.ipynb_checkpoints, .DS_Store) are never classes or images.
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _images_under(folder: Path) -> Iterator[Path]:
    """Images anywhere below ``folder`` (ImageFolder also descends into class folders)."""
    for entry in _visible(folder):
        if entry.is_dir():
            yield from _images_under(entry)
        elif _is_image(entry):
            yield entry


def _scan_folder(root: Path, resolve_label: Callable[[str], int] | None) -> list[LabelledItem]:
    entries = _visible(root)
    subfolders = [p for p in entries if p.is_dir()]
    loose = [p for p in entries if _is_image(p)]
    if subfolders and loose:
        raise BadInputError(
            f"{root} mixes {len(loose)} loose images (e.g. {loose[0].name}) with "
            + f"{len(subfolders)} subfolders (e.g. {subfolders[0].name}/); use one layout: "
            + "class subfolders (one per class, named by index, wnid or label) or only "
            + "images directly inside (unlabelled)"
        )
    if loose:
        return [LabelledItem(p, None) for p in loose]
    items: list[LabelledItem] = []
    for folder in subfolders:
        images = list(_images_under(folder))
        if not images:
            continue  # an empty class folder contributes nothing, as with no folder
        label = _resolve(folder.name, resolve_label, where=f"class folder {folder}")
        items.extend(LabelledItem(p, label) for p in images)
    if not items:
        kinds = ", ".join(sorted(_EXTENSIONS))
        raise BadInputError(
            f"{root}: no images found (looked for {kinds}); pass a folder that holds images"
        )
    return items


def _resolve(name: str, resolve_label: Callable[[str], int] | None, *, where: str) -> int:
    """Class index for ``name``; errors name ``where`` the class came from."""
    if resolve_label is None:
        text = name.strip()
        if not text.isdigit():
            raise BadInputError(
                f"{where}: {name!r} is not a class index; name classes by index "
                + "(0, 1, ...) or pass the model's labels to resolve labels and wnids"
            )
        return int(text)
    try:
        return int(resolve_label(name))
    except TargetError as err:
        raise BadInputError(f"{where}: {err}") from err


def _scan_csv(csv_path: Path, resolve_label: Callable[[str], int] | None) -> list[LabelledItem]:
    base = csv_path.parent
    resolved: dict[str, int] = {}  # each distinct label is resolved once
    items: list[LabelledItem] = []
    first = True
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if first:
                first = False
                if _is_header(cells):
                    continue
            if len(cells) > 2:
                raise BadInputError(
                    f"{csv_path} line {line_no}: {len(cells)} columns; expected path,label "
                    + "(quote paths that contain commas)"
                )
            where = f"{csv_path} line {line_no}"
            image = Path(cells[0])
            if not image.is_absolute():
                image = base / image
            if not image.is_file():
                raise BadInputError(
                    f"{where}: image {cells[0]!r} not found (looked for {image}); fix the path or remove the row"
                )
            name = cells[1] if len(cells) > 1 else ""
            label = None
            if name:
                if name not in resolved:
                    resolved[name] = _resolve(name, resolve_label, where=f"{where}, label {name!r}")
                label = resolved[name]
            items.append(LabelledItem(image, label))
    if not items:
        raise BadInputError(f"{csv_path}: no rows; expected path,label rows (header optional)")
    return items


def _is_header(cells: list[str]) -> bool:
    first = cells[0].lower()
    second = cells[1].lower() if len(cells) > 1 else ""
    return first in _PATH_HEADERS and second in (_LABEL_HEADERS | {""})
