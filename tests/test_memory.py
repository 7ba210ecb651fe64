"""convlens/memory.py: the allocator settings, and the dataset runner's trims under a ceiling.

The bug the runner's trims guard against (EfficientNet-Lite0 ``features``: resident size
+0.3-0.4 MB per image, no live tensor leaked): glibc keeps freed heap memory when a block
still in use sits above it. The stand-in ``fn`` below does the same on purpose: per batch it
frees 33 MB of blocks, each pinned by a small live block above it and too small for the
next batch's blocks, so ``free`` never hands the holes back and nothing reuses them. The
reference is the kernel's own count of the process's resident pages (``/proc/self/status``),
read in the progress callback once the runner is done with each batch, with and without the
trims.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import convlens.memory as memory
from convlens.data.folders import LabelledItem
from convlens.data.runner import read_outputs, run_dataset

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt and malloc_trim are glibc's; other allocators manage memory their own way",
)

_BLOCKS = 128
_FREED_MB = _BLOCKS / 2 * 0.25  # at least, per batch (and as much stays live)


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


# --------------------------------------------------------------- the ceiling's decisions


def test_ceiling_trims_only_above_the_warmup_peak_and_rises_when_a_trim_cannot_get_under(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # resident sizes the checks see, in order (a trim reads the size again afterwards)
    sizes = iter([100, 200, 150, 250, 400, 120, 350, 330, 400, 500, 200])
    trims: list[int] = []
    monkeypatch.setattr(memory, "resident_bytes", lambda: next(sizes))
    monkeypatch.setattr(memory, "release_freed_memory", lambda: trims.append(1) or True)
    ceiling = memory.ResidentCeiling(warmup=3, headroom=1.5)
    decisions = [ceiling.check() for _ in range(8)]
    # warmup peak 200 -> ceiling 300; 400 trims (down to 120); 350 trims but only to 330,
    # so the ceiling rises to 1.5 * 330 = 495; 400 then stays; 500 trims (to 200)
    assert decisions == [False, False, False, False, True, True, False, True]
    assert ceiling.ceiling == pytest.approx(495)
    assert len(trims) == ceiling.trims == 3


def test_ceiling_refuses_a_headroom_that_would_trim_every_batch() -> None:
    with pytest.raises(ValueError, match="headroom"):
        memory.ResidentCeiling(headroom=1.0)


# ------------------------------------------------------------------ the real allocator


@glibc
def test_keep_freed_memory_takes_and_is_idempotent() -> None:
    assert memory.keep_freed_memory() is True
    assert memory.keep_freed_memory() is True
    assert memory.kept_freed_memory() is True


_FAULTS = """
import resource, sys, torch
import convlens.memory as memory
if sys.argv[1] == "kept":
    assert memory.keep_freed_memory()
def faults():
    block = torch.empty(64 << 20, dtype=torch.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block.fill_(1)  # first touch of each page: a fault if the page is new
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()  # the first block is new either way
print(min(faults() for _ in range(3)))
"""


@glibc
def test_kept_memory_serves_a_freed_big_block_again_without_page_faults() -> None:
    import subprocess
    import sys

    def faults(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
        )
        return int(done.stdout.split()[-1])

    # 64 MB is 16384 pages of 4 kB. glibc's defaults map a block that big afresh on every
    # allocation (above its 32 MB threshold cap), so each page faults in again; kept, the
    # freed block is reused with its pages resident
    assert faults("default") > 10_000
    assert faults("kept") < 1_000


def test_the_command_line_keeps_glibcs_defaults_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    called: list[int] = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: called.append(1) or True)
    monkeypatch.setenv("CONVLENS_MALLOC", "default")
    assert memory.keep_freed_memory_unless_disabled() is False
    monkeypatch.setenv("CONVLENS_MALLOC", "")
    assert memory.keep_freed_memory_unless_disabled() is True
    assert called == [1]


# ------------------------------------------------------------------ the dataset runner


def _load(path: Path) -> torch.Tensor:
    return torch.full((3,), float(path.stem))


class _Fragmenting:
    """Per batch, 128 blocks of 256 kB plus 4 kB per batch so far (libc's own malloc, every
    page touched), then every other one freed: each 16 MB batch of holes lies between live
    blocks and is too small for the next batch's bigger blocks, so without a trim the
    resident size grows by the live 16 MB and by the 16 MB of holes each batch."""

    def __init__(self) -> None:
        import ctypes

        self.libc = ctypes.CDLL("libc.so.6")
        self.libc.malloc.restype = ctypes.c_void_p
        self.libc.malloc.argtypes = [ctypes.c_size_t]
        self.libc.free.argtypes = [ctypes.c_void_p]
        self.libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        self.kept: list[int] = []
        self.batches = 0

    def __call__(self, x: torch.Tensor, items: list[LabelledItem]) -> dict[str, Any]:
        self.batches += 1
        size = (256 + 4 * self.batches) << 10
        blocks = [self.libc.malloc(size) for _ in range(_BLOCKS)]
        for block in blocks:
            self.libc.memset(block, 1, size)
        for block in blocks[::2]:
            self.libc.free(block)
        self.kept.extend(blocks[1::2])
        return {"mean": x.mean(dim=1)}

    def release(self) -> None:
        for block in self.kept:
            self.libc.free(block)
        self.kept = []


def _run(tmp_path: Path, name: str) -> list[float]:
    items = [LabelledItem(tmp_path / f"{i}.npy", None) for i in range(48)]
    for item in items:
        item.path.touch()
    after: list[float] = []

    def progress(done: int, total: int) -> None:
        if done:  # the first call comes before any batch
            after.append(_rss_mb())

    fn = _Fragmenting()
    run_dataset(
        items, fn, tmp_path / name, load=_load, batch_size=4, shard_size=48,
        progress=progress,
    )  # fmt: skip
    fn.release()
    outputs = read_outputs(tmp_path / name)
    # the trims free nothing in use: the outputs are still those of fn
    np.testing.assert_array_equal(outputs["mean"], np.arange(48, dtype=np.float32))
    return after


@glibc
def test_runner_keeps_resident_memory_flat_with_rare_trims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import convlens.data.runner as runner

    memory.keep_freed_memory()  # as the command line runs (blocks on the heap, not mapped)

    class Short(memory.ResidentCeiling):
        def __init__(self) -> None:
            super().__init__(warmup=2, headroom=1.15)

    class Never(memory.ResidentCeiling):
        def check(self) -> bool:
            return False

    # each run starts from a trimmed heap, so neither reuses the other's freed pages
    memory.release_freed_memory()
    monkeypatch.setattr(runner, "ResidentCeiling", Never)
    untrimmed = _run(tmp_path, "untrimmed")
    memory.release_freed_memory()
    monkeypatch.setattr(runner, "ResidentCeiling", Short)
    trimmed = _run(tmp_path, "trimmed")
    assert len(trimmed) == len(untrimmed) == 12
    # without trims every batch adds 16 MB live and pins 16 MB of holes: the 10 batches
    # after the second add 320 MB (the reference: the holes are what trims must give back)
    grown = untrimmed[-1] - untrimmed[1]
    assert grown > 0.9 * 10 * 2 * _FREED_MB, (untrimmed, trimmed)
    # with them, the holes go back whenever the size passes the ceiling: what remains is
    # the live 160 MB, at most the ceiling's headroom (15 % of the warmup peak) and a batch
    headroom = 0.15 * max(trimmed[:2])
    assert trimmed[-1] - trimmed[1] < 10 * _FREED_MB + headroom + 2 * _FREED_MB, (
        untrimmed,
        trimmed,
    )
