"""Atomic writes (convlens.atomic): the content lands whole, nothing is left behind, and a
failed write leaves the old file as it was."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlens.atomic import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_bytes_and_text_land_whole_and_leave_no_temporary(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    assert atomic_write_bytes(tmp_path / "a.bin", data) == tmp_path / "a.bin"
    assert (tmp_path / "a.bin").read_bytes() == data
    atomic_write_text(tmp_path / "t.csv", "x,é\r\ny\n", newline="")
    assert (tmp_path / "t.csv").read_bytes() == "x,é\r\ny\n".encode()
    atomic_write_text(tmp_path / "t.csv", "over\n")  # replaces the old file
    assert (tmp_path / "t.csv").read_text(encoding="utf-8") == "over\n"
    assert _names(tmp_path) == ["a.bin", "t.csv"]


def test_a_failure_mid_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.npz"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_open(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old content"
    assert _names(tmp_path) == ["result.npz"]
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"interrupted")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old content"
    assert _names(tmp_path) == ["result.npz"]


def test_a_failure_just_before_the_rename_also_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_text("{}")

    def fail() -> None:
        assert (tmp_path / "manifest.json.tmp").read_text() == '{"new": 1}'  # written in full
        raise OSError("killed here")

    with pytest.raises(OSError, match="killed here"):
        atomic_write_text(
            target, '{"new": 1}', temp=tmp_path / "manifest.json.tmp", before_replace=fail
        )
    assert target.read_text() == "{}" and _names(tmp_path) == ["manifest.json"]


def test_a_fixed_temporary_name_is_reused_and_must_be_beside_the_target(tmp_path: Path) -> None:
    (tmp_path / "shard.npz.tmp").write_bytes(b"stale leftover of a crash, longer than new")
    atomic_write_bytes(tmp_path / "shard.npz", b"new", temp=tmp_path / "shard.npz.tmp")
    assert (tmp_path / "shard.npz").read_bytes() == b"new"
    assert _names(tmp_path) == ["shard.npz"]
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="folder"):
        atomic_write_bytes(tmp_path / "x", b"", temp=tmp_path / "sub" / "x.tmp")


def test_path_writers_and_stream_writers(tmp_path: Path) -> None:
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    with atomic_path(tmp_path / "p.png") as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")  # a writer that wants a file name
    with atomic_open(tmp_path / "a.npy") as f:
        np.save(f, pixels)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "p.png")), pixels)
    assert np.array_equal(np.load(tmp_path / "a.npy"), pixels)
    assert _names(tmp_path) == ["a.npy", "p.png"]


def test_permissions_are_those_of_open_or_of_the_replaced_file(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "new", b"1")
        (tmp_path / "plain").write_bytes(b"1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == stat.S_IMODE(
        (tmp_path / "plain").stat().st_mode
    )
    os.chmod(tmp_path / "plain", 0o604)
    atomic_write_bytes(tmp_path / "plain", b"2")
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o604


def test_bad_targets_fail_before_writing(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write_bytes(tmp_path / "folder", b"x")
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "missing" / "x.bin", b"x")
    with pytest.raises(ValueError, match="mode"):
        atomic_open(tmp_path / "x", "a").__enter__()
    assert _names(tmp_path) == ["folder"] and _names(tmp_path / "folder") == []


def test_fsync_flushes_the_file_then_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[str, bool]] = []
    real = os.fsync

    def spy(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        synced.append((path.name, (tmp_path / "w.pt").exists()))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write_bytes(tmp_path / "w.pt", b"weights", fsync=True)
    # the temporary file before the rename (the target not there yet), then the folder
    assert len(synced) == 2
    assert synced[0][0].startswith(".w.pt.") and synced[0][1] is False
    assert synced[1] == (tmp_path.name, True)
    synced.clear()
    atomic_write_bytes(tmp_path / "fig.png", b"png")
    assert synced == []


def test_concurrent_writers_leave_one_complete_copy(tmp_path: Path) -> None:
    payloads = [bytes([k]) * (1 << 20) for k in range(6)]
    threads = [
        threading.Thread(target=atomic_write_bytes, args=(tmp_path / "same.bin", p))
        for p in payloads
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (tmp_path / "same.bin").read_bytes() in payloads
    assert _names(tmp_path) == ["same.bin"]
