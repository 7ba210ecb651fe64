"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every file convlens writes (results, figures, reports, cached weights, dataset shards,
indexes, CSV tables) goes through here. The bytes go to a temporary file in the target's
own folder (``os.replace`` is atomic only within one file system), which is then renamed
over the target. If the write fails, the temporary file is deleted and the old target is
left as it was. Two processes writing one name at once leave one complete copy: the last
rename wins.

- :func:`atomic_write_bytes`, :func:`atomic_write_text`: the whole content at once.
- :func:`atomic_open`: a file object, for writers that stream (``csv``, ``torch.save``,
  ``Figure.savefig``, ``PIL.Image.save``).
- :func:`atomic_path`: a temporary path, for writers that insist on a file name
  (``faiss.write_index``, ``np.savez``, parquet).

The new file gets the permissions of the file it replaces, or, for a new file, those an
ordinary ``open()`` gives (``0o666`` minus the umask; ``tempfile.mkstemp``'s ``0o600``
would otherwise survive the rename). ``fsync=True`` flushes the file to disk before the
rename and the folder after it, so the new content also survives a power cut (cached
weights, dataset shards, saved results); pictures and pages skip that cost.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_path", "atomic_write_bytes", "atomic_write_text", "fsync_folder"]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Make a rename or deletion in ``folder`` durable (POSIX; Windows cannot open a folder)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(
    path: str | os.PathLike[str],
    *,
    fsync: bool = False,
    temp: str | os.PathLike[str] | None = None,
    before_replace: Callable[[], object] | None = None,
) -> Iterator[Path]:
    """Yield a temporary path to write; on leaving the block it replaces ``path``.

    The temporary file exists (empty) when the block starts. If the block raises, it is
    deleted and ``path`` is untouched.

    Parameters
    ----------
    path
        The file to write. Its folder must exist.
    fsync
        Flush the file to disk before the rename and the folder after it.
    temp
        A fixed temporary name in the same folder (truncated if it exists), for callers
        that find their own leftovers after a crash by name (the dataset runner). Default:
        a fresh hidden name, ``.{name}.{8 hex}.tmp``, so concurrent writers never share one.
    before_replace
        Called after the file is written (and flushed) and before the rename: a test hook
        for killing the process at that moment.

    Yields
    ------
    Path
        The temporary file to write.

    Raises
    ------
    IsADirectoryError
        ``path`` is a folder (checked before anything is written).
    OSError
        The folder is missing or not writable, the disk is full, ...
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(target))
    if temp is None:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    else:
        tmp = Path(temp)
        if tmp.parent.resolve() != target.parent.resolve():
            raise ValueError(f"temporary file {tmp} must be in the folder of {target}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    # os.open with 0o666 lets the umask decide, as for any new file.
    os.close(os.open(tmp, flags | getattr(os, "O_BINARY", 0), 0o666))
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        with contextlib.suppress(FileNotFoundError):  # a new file keeps the umask's mode
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        if before_replace is not None:
            before_replace()
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_folder(target.parent)


@contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    fsync: bool = False,
    temp: str | os.PathLike[str] | None = None,
    before_replace: Callable[[], object] | None = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on leaving the block it replaces ``path``.

    Parameters
    ----------
    path
        The file to write.
    mode
        ``"wb"`` (bytes) or ``"w"`` (text).
    encoding, newline
        As for :func:`open` in text mode (``encoding`` defaults to UTF-8 there).
    fsync, temp, before_replace
        As for :func:`atomic_path`.

    Yields
    ------
    IO
        The open temporary file, closed before the rename.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with (
        atomic_path(path, fsync=fsync, temp=temp, before_replace=before_replace) as tmp,
        open(tmp, mode, encoding=encoding, newline=newline) as handle,
    ):
        yield handle


def atomic_write_bytes(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    fsync: bool = False,
    temp: str | os.PathLike[str] | None = None,
    before_replace: Callable[[], object] | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically (options as for :func:`atomic_path`).

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_open(path, "wb", fsync=fsync, temp=temp, before_replace=before_replace) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike[str],
    text: str,
    *,
    encoding: str = "utf-8",
    newline: str | None = None,
    fsync: bool = False,
    temp: str | os.PathLike[str] | None = None,
    before_replace: Callable[[], object] | None = None,
) -> Path:
    """Write ``text`` to ``path`` atomically (options as for :func:`open` and :func:`atomic_path`).

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_open(
        path,
        "w",
        encoding=encoding,
        newline=newline,
        fsync=fsync,
        temp=temp,
        before_replace=before_replace,
    ) as f:
        f.write(text)
    return Path(path)
