"""Cue-conflict images: the Geirhos layout and a well-formed labels.csv (tiny sizes and steps)."""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlens.errors import BadInputError
from convlens.robustness.shape_bias import scan_cue_conflict
from convlens.style.cue_conflict import cue_conflict_pairs, make_cue_conflict, scan_categories

SHAPES = {"cat": 2, "dog": 1, "car": 1}
TEXTURES = {"cat": 1, "elephant": 2}
CATEGORIES = {name: (i,) for i, name in enumerate(sorted(set(SHAPES) | set(TEXTURES)))}


def _folder(root: Path, counts: dict[str, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for category, n in counts.items():
        (root / category).mkdir(parents=True)
        for k in range(n):
            Image.fromarray((rng.random((20, 28, 3)) * 255).astype(np.uint8)).save(
                root / category / f"img{k}.png"
            )
    (root / "notes.txt").write_text("not an image folder")
    return root


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return _folder(tmp_path / "shapes", SHAPES, 0), _folder(tmp_path / "textures", TEXTURES, 1)


def _rows(out: Path) -> list[list[str]]:
    with (out / "labels.csv").open(newline="") as f:
        return list(csv.reader(f))


def _expected_pairs(include_same: bool) -> set[tuple[str, int, str, int]]:
    """Brute force: every shape image x texture image, by category and 1-based index."""
    shapes = [(c, n) for c, k in SHAPES.items() for n in range(1, k + 1)]
    textures = [(c, m) for c, k in TEXTURES.items() for m in range(1, k + 1)]
    return {
        (s, n, t, m)
        for (s, n), (t, m) in itertools.product(shapes, textures)
        if include_same or s != t
    }


def test_labels_file_is_well_formed(loss_model, dirs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = make_cue_conflict(loss_model, *dirs, out, size=24, steps=1)
    rows = _rows(out)
    assert rows[0] == ["path", "shape", "texture"]
    made = set()
    for path, shape, texture in rows[1:]:
        file = out / path
        assert file.is_file() and not Path(path).is_absolute()
        assert file.parent.name == shape  # the folder is the shape category
        name = re.fullmatch(r"([a-z_]+)(\d+)-([a-z_]+)(\d+)\.png", file.name)
        assert name is not None, path
        assert name[1] == shape and name[3] == texture  # texture from the name
        assert shape != texture  # no same-category pair by default
        with Image.open(file) as im:
            assert max(im.size) == 24
        made.add((shape, int(name[2]), texture, int(name[4])))
    assert made == _expected_pairs(include_same=False) and len(rows) - 1 == len(made)
    assert sorted(result.sources) == sorted(str(out / r[0]) for r in rows[1:])
    # the shape-bias reader takes both the CSV and the folder layout, and they agree
    from_csv = scan_cue_conflict(out / "labels.csv", CATEGORIES)
    from_folders = scan_cue_conflict(out, CATEGORIES)
    assert sorted((i.path, i.shape, i.texture) for i in from_csv) == sorted(
        (i.path, i.shape, i.texture) for i in from_folders
    )
    assert not list(out.rglob(".*.tmp"))


def test_include_same_adds_the_same_category_pairs(dirs: tuple[Path, Path]) -> None:
    shapes, textures = scan_categories(dirs[0]), scan_categories(dirs[1])
    with_same = cue_conflict_pairs(shapes, textures, include_same=True)
    got = {
        (
            p.shape,
            int(re.search(r"(\d+)-", p.path)[1]),
            p.texture,
            int(re.search(r"(\d+)\.png", p.path)[1]),
        )
        for p in with_same
    }
    assert got == _expected_pairs(include_same=True)


def test_a_subset_of_pairs_is_seeded(dirs: tuple[Path, Path]) -> None:
    shapes, textures = scan_categories(dirs[0]), scan_categories(dirs[1])
    everything = cue_conflict_pairs(shapes, textures)
    a = cue_conflict_pairs(shapes, textures, pairs=3, seed=5)
    b = cue_conflict_pairs(shapes, textures, pairs=3, seed=5)
    assert a == b and len(a) == 3 and set(a) <= set(everything)
    assert {tuple(cue_conflict_pairs(shapes, textures, pairs=3, seed=s)) for s in range(8)} != {
        tuple(a)
    }
    assert cue_conflict_pairs(shapes, textures, pairs=100) == everything


def test_pairs_option_writes_that_many(loss_model, dirs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_cue_conflict(loss_model, *dirs, out, pairs=2, size=20, steps=1, seed=3)
    assert len(_rows(out)) == 3 and len(list(out.rglob("*.png"))) == 2


@pytest.mark.parametrize(
    "problem", ["missing", "bad_category", "unreadable", "same_only", "no_images"]
)
def test_bad_input_fails_before_anything_is_written(
    loss_model, dirs: tuple[Path, Path], tmp_path: Path, problem: str
) -> None:
    shapes, textures = dirs
    kwargs = {}
    if problem == "missing":
        shapes = tmp_path / "nope"
    elif problem == "bad_category":
        (shapes / "cat-2").mkdir()
        Image.new("RGB", (20, 20)).save(shapes / "cat-2" / "a.png")
    elif problem == "unreadable":
        (textures / "elephant" / "broken.png").write_bytes(b"not a png")
    elif problem == "same_only":
        textures = shapes
        kwargs = {"pairs": None}
        for sub in ("dog", "car"):
            for f in (shapes / sub).iterdir():
                f.unlink()
            (shapes / sub).rmdir()
    else:
        shapes = tmp_path / "empty"
        shapes.mkdir()
    out = tmp_path / "out"
    with pytest.raises(BadInputError) as info:
        make_cue_conflict(loss_model, shapes, textures, out, size=20, steps=1, **kwargs)
    assert "\n" not in str(info.value)
    assert not out.exists()
