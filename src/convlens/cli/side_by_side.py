"""Models side by side in the ``robustness`` subcommands: ``--model a,b,c``.

Each model's run is exactly the one-model run of the subcommand, written to its own
sub-folder ``OUT/<model>/``; the subcommand then adds one table and one picture across
the models in ``OUT``. What lives here is shared by the subcommands: loading the models
(once, all of them, before any work), checking that each gives the class scores the
command needs, the sub-folders, and the ``--json`` payload type of a multi-model run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.errors import BadInputError

if TYPE_CHECKING:
    from convlens.models.model import Model

__all__ = ["SideBySide", "check_class_scores", "load_models", "model_folders", "print_rows"]

Name = TypeVar("Name")  # Literal["subcommand-name"]
One = TypeVar("One")  # the one-model output
Files = TypeVar("Files")  # the files made across the models


def load_models(ctx: Context) -> list[Any]:
    """Every model of ``--model a,b,c`` (built-in names and user models, loaded once, names
    distinct; the same loader and list syntax as ``explain``), in the order given, each
    refused unless it gives class scores ``(N, classes)``."""
    return list(ctx.models(class_scores=True))


def check_class_scores(model: Model, command: str, *, classes: int, why: str = "") -> None:
    """Refuse a model whose output is not ``(N, classes)`` scores with at least ``classes`` classes.

    One forward pass of a blank image at the model's input size (eval mode, no gradient),
    so a segmentation net, an embedding or a detector fails before any long work starts.
    ``why`` (e.g. ``" (an ImageNet-1k classifier)"``) follows the need in the message.
    """
    import torch

    from convlens.hooks import eval_mode

    h, w = model.input_size
    blank = torch.zeros(1, model.channels, h, w, device=model.device, dtype=model.dtype)
    try:
        with eval_mode(model.module), torch.no_grad():
            output = model.module(blank)
    except Exception as exc:  # the user's forward pass; its message is what helps
        raise BadInputError(
            f"--model {model.name}: the forward pass of a {model.channels}x{h}x{w} image failed ({type(exc).__name__}: {exc})"
        ) from None
    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        raise BadInputError(
            f"--model {model.name}: {command} needs class scores (N, classes){why}; the model gives {shape}"
        )
    if output.shape[1] < classes:
        raise BadInputError(
            f"--model {model.name}: {command} needs scores for at least {classes} classes{why}; the model gives {shape}"
        )


def model_folders(out: Path, models: list[Any]) -> list[Path]:
    """``OUT`` for one model; ``OUT/<name>/`` per model for several (names made file-safe, distinct)."""
    if len(models) == 1:
        return [out]
    folders: list[Path] = []
    taken: set[str] = set()
    for model in models:
        # user models are named like "nets/my.py:build": keep letters, digits, '.', '_', '-'
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(model.name)).strip("._") or "model"
        slug, k = base, 2
        while slug in taken:
            slug, k = f"{base}-{k}", k + 1
        taken.add(slug)
        folders.append(out / slug)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders


class SideBySide(TypedDict, Generic[Name, One, Files]):
    """several models (--model a,b,...): `results` holds the one-model output of each model, in --model order, each written to OUT/<model>/; `files` are the table and picture across the models"""

    subcommand: Name
    models: list[str]
    source: str
    results: list[One]
    files: Files
    errors: list[str]


def print_rows(rows: list[list[str]]) -> None:
    """A plain text table: the first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths))
            )
        )
        if k == 0:
            print("  ".join("-" * w for w in widths))
