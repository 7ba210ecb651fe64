"""Image arguments of commands: files, folders and ``sample:NAME``, read one by one.

Bad files are reported (one line each) and skipped, so the good ones are still
processed; the command then exits with code 2.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from convlens.cli.context import Context
from convlens.errors import ImageReadError

__all__ = ["LoadedImage", "expand_image_args", "iter_images"]


@dataclass
class LoadedImage:
    source: str
    image: torch.Tensor  # image space (3, H, W)


def expand_image_args(args: Sequence[str]) -> list[str]:
    """Paths, folders (their images, sorted) and ``sample:NAME`` as a flat list.

    A missing path is kept, so it is reported as a bad input in turn with the others.
    """
    from convlens.data.images import find_images

    out: list[str] = []
    for arg in args:
        if arg.startswith("sample:") or not Path(arg).is_dir():
            out.append(arg)
            continue
        found = find_images([arg])
        # An empty folder stays in the list, so it is reported ("is a directory") with the
        # other bad inputs while the good ones are still processed.
        out.extend([str(p) for p in found] or [arg])
    return out


def iter_images(
    ctx: Context, args: Sequence[str], description: str = "reading images"
) -> Iterator[LoadedImage]:
    """Read each image argument; report bad ones on stderr and skip them."""
    from convlens.data.images import load_image
    from convlens.data.samples import load_sample

    for arg in ctx.iter_with_progress(expand_image_args(args), description):
        try:
            source = load_sample(arg) if arg.startswith("sample:") else arg
            yield LoadedImage(arg, load_image(source, name=arg))
        except ImageReadError as exc:
            ctx.report_bad_input(exc)
