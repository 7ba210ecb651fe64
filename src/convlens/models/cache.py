"""The convlens cache folder and crash-safe writes into it.

Models convlens trains itself (:mod:`convlens.models.small`) are stored here. Files are
written atomically (a temporary file in the same folder, flushed to disk, then renamed
over the target), so a reader never sees half a file and two processes writing the same
name at once leave one complete copy: the last writer wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import platformdirs
import torch

from convlens.atomic import atomic_open
from convlens.hashing import file_sha256  # re-exported: the cached models' sidecars

__all__ = ["CACHE_ENV", "atomic_torch_save", "cache_dir", "file_sha256"]

#: Environment variable that overrides the cache folder.
CACHE_ENV = "CONVLENS_CACHE_DIR"


def cache_dir() -> Path:
    """The folder convlens caches trained models in, created if missing.

    Returns
    -------
    Path
        ``$CONVLENS_CACHE_DIR`` when set and not empty, otherwise the platform's user cache
        folder for ``convlens`` (e.g. ``~/.cache/convlens`` on Linux).
    """
    override = os.environ.get(CACHE_ENV, "").strip()
    path = (
        Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("convlens"))
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` that never leaves a partial file at ``path``.

    Parameters
    ----------
    obj
        Anything ``torch.save`` accepts (convlens saves state dicts).
    path
        Destination; its folder is created if missing. An existing file is replaced.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(target, fsync=True) as f:
        torch.save(obj, f)
