"""Class labels: index <-> name <-> WordNet id, with refusal of ambiguous names.

ImageNet-1k names repeat ("crane" is 134 and 517; "maillot" 638 and 639), so a name that
matches several classes raises :class:`~convlens.errors.AmbiguousLabelError` listing the
candidates; indices and wnids always resolve.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from convlens.errors import AmbiguousLabelError, TargetError

__all__ = ["Labels", "imagenet_labels"]


@dataclass(frozen=True)
class Labels:
    """The class names of a classifier.

    Parameters
    ----------
    names
        Display name of each class, by index.
    wnids
        Optional WordNet ids, by index.
    synonyms
        Optional extra names per class that also resolve (case-insensitive).
    """

    names: tuple[str, ...]
    wnids: tuple[str, ...] | None = None
    synonyms: tuple[tuple[str, ...], ...] | None = None
    _lookup: dict[str, tuple[int, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        table: dict[str, set[int]] = {}
        for i, name in enumerate(self.names):
            keys = {name, *(self.synonyms[i] if self.synonyms else ())}
            for key in keys:
                table.setdefault(key.strip().lower(), set()).add(i)
        self._lookup.update({k: tuple(sorted(v)) for k, v in table.items()})

    @classmethod
    def from_names(cls, names: Sequence[str]) -> Labels:
        """Labels from a plain list of names."""
        return cls(tuple(str(n) for n in names))

    def __len__(self) -> int:
        return len(self.names)

    def name(self, index: int) -> str:
        """Display name of class ``index``."""
        return self.names[index]

    def wnid(self, index: int) -> str | None:
        """WordNet id of class ``index`` (None when the labels have none)."""
        return self.wnids[index] if self.wnids else None

    def resolve(self, key: str | int) -> int:
        """Class index for an index, a numeric string, a wnid or an unambiguous name.

        Raises
        ------
        TargetError
            The key matches no class (the message suggests close names).
        AmbiguousLabelError
            The name matches several classes.
        """
        if isinstance(key, bool):
            raise TargetError(f"class {key!r} is a bool; pass a class index, label or wnid")
        if isinstance(key, int):
            if not 0 <= key < len(self.names):
                raise TargetError(
                    f"class index {key} is out of range: the model has {len(self.names)} classes (0-{len(self.names) - 1})"
                )
            return key
        text = str(key).strip()
        if text.lstrip("-").isdigit():
            return self.resolve(int(text))
        if self.wnids and text in self.wnids:
            return self.wnids.index(text)
        matches = self._lookup.get(text.lower(), ())
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise AmbiguousLabelError(text, [(i, self.names[i]) for i in matches])
        close = difflib.get_close_matches(text.lower(), list(self._lookup), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise TargetError(
            f"unknown class {text!r}{hint} (pass a class index 0-{len(self.names) - 1}, a label or a wnid)"
        )


@cache
def imagenet_labels() -> Labels:
    """The 1000 ImageNet-1k classes with WordNet ids (shipped with convlens)."""
    path = Path(__file__).with_name("imagenet_classes.json")
    entries = json.loads(path.read_text(encoding="utf-8"))
    return Labels(
        names=tuple(e["synonyms"][0] for e in entries),
        wnids=tuple(e["wnid"] for e in entries),
        synonyms=tuple((e["name"], *e["synonyms"]) for e in entries),
    )
