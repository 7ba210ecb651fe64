"""convlens.hashing.file_sha256: the one file digest, checked against hashlib on the bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from convlens.hashing import file_sha256
from convlens.models import cache


def test_known_vector_and_large_file_match_hashlib(tmp_path: Path) -> None:
    small = tmp_path / "abc.bin"
    small.write_bytes(b"abc")
    # FIPS 180-2 test vector for "abc"
    assert file_sha256(small) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    # larger than the read chunk and not a multiple of it
    data = os.urandom((3 << 20) + 12345)
    big = tmp_path / "big.bin"
    big.write_bytes(data)
    assert file_sha256(str(big)) == hashlib.sha256(data).hexdigest()


def test_a_changed_file_is_hashed_again(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(b"A" * 100)
    for memoize in (False, True):
        path.write_bytes(b"A" * 100)
        first = file_sha256(path, memoize=memoize)
        # same size, rewritten in place, with a different modification time
        path.write_bytes(b"B" * 100)
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert file_sha256(path, memoize=memoize) == hashlib.sha256(b"B" * 100).hexdigest() != first
        # replaced by another file (a new inode), as the atomic cache writes do
        other = tmp_path / "new.pt"
        other.write_bytes(b"C" * 100)
        os.replace(other, path)
        assert file_sha256(path, memoize=memoize) == hashlib.sha256(b"C" * 100).hexdigest()


def test_integrity_checks_read_the_bytes_even_when_size_and_time_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "shard.npz"
    path.write_bytes(b"A" * 100)
    st = path.stat()
    assert file_sha256(path, memoize=True) == hashlib.sha256(b"A" * 100).hexdigest()
    # corrupted in place, size and modification time restored (as within one clock tick)
    with open(path, "r+b") as f:
        f.write(b"Z")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    corrupted = hashlib.sha256(b"Z" + b"A" * 99).hexdigest()
    assert file_sha256(path) == corrupted  # the default always reads
    # the memo is for files that do not change: it still has the old digest
    assert file_sha256(path, memoize=True) == hashlib.sha256(b"A" * 100).hexdigest()


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "absent")


def test_the_cache_module_uses_the_same_function() -> None:
    # the cached models' sidecars and the provenance digests come from one implementation
    assert cache.file_sha256 is file_sha256
