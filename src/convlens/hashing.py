"""File digests: the one place convlens hashes a file.

Weights files are hashed for provenance (``weights_sha256``) and cached trained models are
checked against the digest in their sidecar. A large file (the ImageNet weights are tens of
megabytes) is read once per state: the digest is memoised on the file's path, inode, size and
modification time in nanoseconds, so a file replaced or rewritten in place is hashed again.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

__all__ = ["file_sha256"]

_CHUNK = 1 << 20  # 1 MiB: large reads without holding a whole weights file in memory


@lru_cache(maxsize=256)
def _digest(path: str, inode: int, size: int, mtime_ns: int) -> str:
    # the file's state is part of the key only so that a changed file misses the cache
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 digest of a file's bytes (memoised while the file is unchanged).

    Parameters
    ----------
    path
        The file to hash.

    Returns
    -------
    str
        64 lowercase hex characters.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    """
    resolved = Path(path).resolve()
    st = resolved.stat()
    return _digest(str(resolved), st.st_ino, st.st_size, st.st_mtime_ns)
