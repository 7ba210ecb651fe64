"""The explorer's temp area: every file a route reads or writes lives under one folder.

Names never come from the user as paths. Image ids are tokens the server generates
(:func:`new_token`, 32 hex digits); file names are built by the server from a fixed kind
and a hash of the arguments. Both are checked against a strict regex before use, and the
resolved path is checked to lie inside the area, so ``../``, absolute paths, encoded
separators or NUL bytes are refused whatever route they arrive through.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from convlens.atomic import atomic_write_bytes
from convlens.errors import BadInputError

__all__ = ["FILE_NAME", "TOKEN", "Storage", "new_token"]

#: an image or job id: exactly 32 lowercase hex digits (server-generated)
TOKEN = re.compile(r"[0-9a-f]{32}")
#: a stored file: ``kind-hash.ext`` or ``kind-hash-suffix.ext``, lowercase, no separators
FILE_NAME = re.compile(r"[a-z]{2,12}(-[0-9a-z]{1,32}){0,3}\.(png|npy|json|bin)")


def new_token() -> str:
    """A fresh unguessable id (128 random bits, hex)."""
    return secrets.token_hex(16)


class Storage:
    """One folder per image under a private temp directory, oldest evicted first.

    Parameters
    ----------
    root
        The area's folder; default a fresh ``tempfile.mkdtemp`` (mode 0700), removed by
        :meth:`close`.
    max_images
        Images kept; adding one more drops the least recently used (bounds disk use).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, max_images: int = 64) -> None:
        self._owned = root is None
        self.root = Path(
            tempfile.mkdtemp(prefix="convlens-serve-") if root is None else root
        ).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_images = max_images
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, None] = OrderedDict()

    # -- validation --------------------------------------------------------------------
    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise BadInputError("path outside the server's storage area")
        return resolved

    @staticmethod
    def check_token(token: str, what: str = "id") -> str:
        if not isinstance(token, str) or not TOKEN.fullmatch(token):
            raise BadInputError(f"{what} is not a valid id (32 hex digits issued by this server)")
        return token

    @staticmethod
    def check_name(name: str) -> str:
        if not isinstance(name, str) or not FILE_NAME.fullmatch(name):
            raise BadInputError("file name is not one this server issues")
        return name

    # -- images ------------------------------------------------------------------------
    def image_dir(self, image_id: str) -> Path:
        """The folder of an existing image (``KeyError`` if it is unknown or evicted)."""
        folder = self._inside(self.root / self.check_token(image_id, "image id"))
        if not folder.is_dir():
            raise KeyError(image_id)
        with self._lock:
            if image_id in self._recent:
                self._recent.move_to_end(image_id)
        return folder

    def add_image(self, data: bytes, meta: dict[str, Any]) -> str:
        """Store an image's bytes and metadata; returns its new id."""
        image_id = new_token()
        folder = self._inside(self.root / image_id)
        tmp = self._inside(self.root / f"{image_id}.tmp")
        tmp.mkdir(mode=0o700)
        (tmp / "source.bin").write_bytes(data)
        (tmp / "meta.json").write_text(json.dumps(meta))
        tmp.rename(folder)  # appears complete or not at all
        with self._lock:
            self._recent[image_id] = None
            evicted = []
            while len(self._recent) > self.max_images:
                evicted.append(self._recent.popitem(last=False)[0])
        for old in evicted:
            shutil.rmtree(self.root / old, ignore_errors=True)
        return image_id

    def meta(self, image_id: str) -> dict[str, Any]:
        return dict(json.loads((self.image_dir(image_id) / "meta.json").read_text()))

    def file(self, image_id: str, name: str) -> Path:
        """Path of a stored file of an image (it may not exist yet)."""
        return self._inside(self.image_dir(image_id) / self.check_name(name))

    def shared_file(self, name: str) -> Path:
        """Path of a file shared by all images (e.g. cached channel visualisations)."""
        folder = self.root / "shared"
        folder.mkdir(exist_ok=True)
        return self._inside(folder / self.check_name(name))

    def write(self, path: Path, data: bytes) -> Path:
        """Write atomically (a reader never sees half a file)."""
        return atomic_write_bytes(self._inside(path), data)

    def close(self) -> None:
        """Remove the area if this object created it."""
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)
