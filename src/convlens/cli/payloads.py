"""Pieces of the commands' ``--json`` payloads that several commands share.

Each command declares its whole payload as a ``TypedDict`` beside its ``run`` and derives
``SCHEMA`` from it (:mod:`convlens.cli.schema`); what more than one command prints is
declared here once, so a class reference or a file list is spelled the same everywhere.
Torch-free on purpose: commands import it at module level to build their schemas.
"""

from __future__ import annotations

from typing import Annotated

from typing_extensions import NotRequired, TypedDict

from convlens.cli.schema import Bounds

__all__ = ["ClassRef", "ClassScore", "Files", "Probability"]

#: a softmax probability
Probability = Annotated[float, Bounds(minimum=0, maximum=1)]

#: the files a command wrote, by role (``{"figure": "out/x.png", ...}``)
Files = Annotated[dict[str, str], "the files written, by role"]

# `class` is a Python keyword, so these two use the functional TypedDict form
#: a class of the model's output: its index and its name
ClassRef = TypedDict("ClassRef", {"class": Annotated[int, Bounds(minimum=0)], "label": str})

#: a class with the probability the model gives it (``wnid`` for ImageNet classes)
ClassScore = TypedDict(
    "ClassScore",
    {
        "class": Annotated[int, Bounds(minimum=0)],
        "label": str,
        "wnid": NotRequired[str | None],
        "probability": Probability,
    },
)
