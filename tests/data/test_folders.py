from __future__ import annotations

from pathlib import Path

import pytest

from convlens.data.folders import LabelledItem, scan_labelled
from convlens.errors import AmbiguousLabelError, BadInputError, TargetError
from convlens.models.labels import imagenet_labels

# A tiny label table: index, wnid and name of three ImageNet classes, plus an ambiguous name.
_TABLE = {
    "281": 281, "n02123045": 281, "tabby": 281,
    "282": 282, "n02123159": 282, "tiger cat": 282,
    "967": 967, "n07920052": 967, "espresso": 967,
}  # fmt: skip


def resolve(name: str) -> int:
    if name == "crane":
        raise AmbiguousLabelError(name, [(134, "crane"), (517, "crane")])
    if name not in _TABLE:
        raise TargetError(f"unknown class {name!r}")
    return _TABLE[name]


def touch(root: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not decoded by scan_labelled")
        paths.append(path)
    return paths


def test_class_folders_by_index_wnid_and_label(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "281/b.jpg",
        "281/a.png",
        "n02123159/c.png",
        "espresso/nested/e.png",
        "espresso/d.JPEG",
    )
    touch(tmp_path, "281/notes.txt", ".ipynb_checkpoints/x.png", "espresso/.hidden.png")
    items = scan_labelled(tmp_path, resolve)
    expected = [
        LabelledItem(tmp_path / "281/a.png", 281),
        LabelledItem(tmp_path / "281/b.jpg", 281),
        LabelledItem(tmp_path / "espresso/d.JPEG", 967),
        LabelledItem(tmp_path / "espresso/nested/e.png", 967),
        LabelledItem(tmp_path / "n02123159/c.png", 282),
    ]
    assert items == expected
    # the same answer with the real ImageNet resolver
    assert scan_labelled(tmp_path, imagenet_labels().resolve) == expected


def test_order_is_deterministic_and_sorted(tmp_path: Path) -> None:
    names = [f"{c}/{i:02d}.png" for c in ("282", "281") for i in (11, 3, 7)]
    touch(tmp_path, *names)
    items = scan_labelled(tmp_path, resolve)
    assert [i.path for i in items] == sorted(tmp_path / n for n in names)
    assert scan_labelled(tmp_path, resolve) == items


def test_integer_folders_without_resolver(tmp_path: Path) -> None:
    touch(tmp_path, "0/a.png", "1/b.png", "10/c.png", "2/d.png")
    items = scan_labelled(tmp_path)
    assert {(i.path.name, i.label) for i in items} == {
        ("a.png", 0),
        ("b.png", 1),
        ("c.png", 10),
        ("d.png", 2),
    }


def test_named_folder_without_resolver_is_refused(tmp_path: Path) -> None:
    touch(tmp_path, "0/a.png", "tabby/b.png")
    with pytest.raises(BadInputError, match="not a class index") as err:
        scan_labelled(tmp_path)
    assert str(tmp_path / "tabby") in str(err.value)


@pytest.mark.parametrize("folder", ["tabbby", "crane"])
def test_unknown_or_ambiguous_class_folder_names_the_folder(tmp_path: Path, folder: str) -> None:
    touch(tmp_path, "281/a.png", f"{folder}/b.png")
    with pytest.raises(BadInputError) as err:
        scan_labelled(tmp_path, resolve)
    message = str(err.value)
    assert str(tmp_path / folder) in message
    assert folder in message.split(":", 1)[1]  # the resolver's own reason follows
    assert isinstance(err.value.__cause__, TargetError)


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    touch(tmp_path, "b.png", "a.jpg", "c.webp", "readme.txt", "labels.json")
    items = scan_labelled(tmp_path, resolve)
    assert items == [LabelledItem(tmp_path / n, None) for n in ("a.jpg", "b.png", "c.webp")]


def test_mixed_layout_is_refused_with_both_layouts_explained(tmp_path: Path) -> None:
    touch(tmp_path, "loose.png", "281/a.png")
    with pytest.raises(BadInputError) as err:
        scan_labelled(tmp_path, resolve)
    message = str(err.value)
    assert "loose.png" in message and "281/" in message
    assert "class subfolders" in message and "unlabelled" in message


@pytest.mark.parametrize("names", [[], ["readme.txt"], ["281/notes.txt"]])
def test_folder_without_images_is_refused(tmp_path: Path, names: list[str]) -> None:
    touch(tmp_path, *names)
    with pytest.raises(BadInputError, match="no images"):
        scan_labelled(tmp_path, resolve)


def test_missing_path_and_non_csv_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        scan_labelled(tmp_path / "nope")
    (image,) = touch(tmp_path, "a.png")
    with pytest.raises(BadInputError, match=r"not a folder or a \.csv"):
        scan_labelled(image)


def test_csv_with_header_relative_and_absolute_paths(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (absolute,) = touch(elsewhere, "z.png")
    touch(tmp_path / "data", "img/b.png", "img/a.png", "c.jpg")
    csv_path = tmp_path / "data" / "labels.csv"
    rows = ["path,label", "img/b.png,tabby", "", f"{absolute},n02123159", "img/a.png,967", "c.jpg,"]
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    items = scan_labelled(csv_path, resolve)
    # the CSV's own order, relative paths from the CSV's folder, empty label = unlabelled
    assert items == [
        LabelledItem(tmp_path / "data/img/b.png", 281),
        LabelledItem(absolute, 282),
        LabelledItem(tmp_path / "data/img/a.png", 967),
        LabelledItem(tmp_path / "data/c.jpg", None),
    ]


def test_csv_without_header_and_integer_labels(tmp_path: Path) -> None:
    touch(tmp_path, "a.png", "b.png")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("a.png,3\nb.png, 0\n", encoding="utf-8")
    assert scan_labelled(csv_path) == [
        LabelledItem(tmp_path / "a.png", 3),
        LabelledItem(tmp_path / "b.png", 0),
    ]
    # a header-less first row is data, not swallowed as a header
    assert len(scan_labelled(csv_path)) == 2


def test_csv_bad_rows_name_the_line(tmp_path: Path) -> None:
    touch(tmp_path, "a.png")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\na.png,tabby\na.png,tabbby\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"line 3.*tabbby") as err:
        scan_labelled(csv_path, resolve)
    assert isinstance(err.value.__cause__, TargetError)
    csv_path.write_text("path,label\nmissing.png,tabby\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"line 2.*missing\.png.*not found"):
        scan_labelled(csv_path, resolve)
    csv_path.write_text("a.png,tabby,extra\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"line 1: 3 columns"):
        scan_labelled(csv_path, resolve)
    csv_path.write_text("path,label\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="no rows"):
        scan_labelled(csv_path, resolve)
