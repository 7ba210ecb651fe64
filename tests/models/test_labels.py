from __future__ import annotations

import pytest

from convlens.errors import AmbiguousLabelError, TargetError
from convlens.models.labels import Labels, imagenet_labels


def test_imagenet_labels_known_entries() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels.name(281) == "tabby"
    assert labels.wnid(281) == "n02123045"
    assert labels.name(967) == "espresso"
    assert labels.wnid(0) == "n01440764"  # tench
    assert len(set(labels.wnids or ())) == 1000


@pytest.mark.parametrize(
    ("key", "index"),
    [
        (281, 281),
        ("281", 281),
        ("tabby", 281),
        ("Tabby Cat", 281),
        ("n02123045", 281),
        ("espresso", 967),
    ],
)
def test_resolve(key: object, index: int) -> None:
    assert imagenet_labels().resolve(key) == index  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "candidates"), [("crane", {134, 517}), ("maillot", {638, 639})])
def test_ambiguous_names_are_refused_with_candidates(name: str, candidates: set[int]) -> None:
    with pytest.raises(AmbiguousLabelError) as err:
        imagenet_labels().resolve(name)
    assert {i for i, _ in err.value.candidates} == candidates
    for i in candidates:
        assert str(i) in str(err.value)


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(TargetError, match=r"did you mean.*tabby"):
        imagenet_labels().resolve("tabbby")
    with pytest.raises(TargetError, match="out of range"):
        imagenet_labels().resolve(1000)


def test_plain_labels() -> None:
    labels = Labels.from_names(["zero", "one"])
    assert labels.resolve("one") == 1
    assert labels.wnid(0) is None
