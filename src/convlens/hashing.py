"""File digests: the one place convlens hashes a file.

Weights files are hashed for provenance (``weights_sha256``); cached trained models and
dataset shards are checked against the digest in their sidecar or manifest. An integrity
check must read the bytes every time (a corrupted file can keep its size and, within one
clock tick, its modification time), so that is the default. Packaged weights that do not
change (the ImageNet models are tens of megabytes, hashed at every load) pass
``memoize=True``: the digest is then kept per path, inode, size and modification time in
nanoseconds, so a file replaced or rewritten later is hashed again.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

__all__ = ["file_sha256"]

_CHUNK = 1 << 20  # 1 MiB: large reads without holding a whole weights file in memory


def _read_digest(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@lru_cache(maxsize=256)
def _memoized_digest(path: str, inode: int, size: int, mtime_ns: int) -> str:
    # the file's state is part of the key only so that a changed file misses the cache
    return _read_digest(path)


def file_sha256(path: str | os.PathLike[str], *, memoize: bool = False) -> str:
    """Hex sha256 digest of a file's bytes.

    Parameters
    ----------
    path
        The file to hash.
    memoize
        Reuse the digest of an earlier call while the file's path, inode, size and
        modification time are unchanged (for read-only weights; never for integrity checks).

    Returns
    -------
    str
        64 lowercase hex characters.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    """
    if not memoize:
        return _read_digest(path)
    resolved = Path(path).resolve()
    st = resolved.stat()
    return _memoized_digest(str(resolved), st.st_ino, st.st_size, st.st_mtime_ns)
