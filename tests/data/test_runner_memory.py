"""Issue 20 part 2: memory a batch freed goes back to the OS before the next batch.

The bug this guards against (EfficientNet-Lite0 ``features``: resident size +0.3-0.4 MB per
image, no live tensor leaked): glibc keeps freed heap memory when a block still in use sits
above it, here the outputs the shard buffer keeps. The stand-in ``fn`` below does the same
on purpose: it touches 64 MB of 100 kB tensors (heap, not mmap), keeps every eighth one and
frees the rest, so the freed blocks lie between blocks in use, where glibc's ``free`` never
hands them back. The reference is the kernel's own count of the
process's resident pages (``/proc/self/status``), read inside ``fn`` at its peak and again in
the progress callback once the runner is done with the batch.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from convlens.data.folders import LabelledItem
from convlens.data.runner import read_outputs, run_dataset

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="malloc_trim is glibc's; other allocators return memory their own way",
)

_SCRATCH_MB = 64
_FREED_MB = _SCRATCH_MB * 7 / 8


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _load(path: Path) -> torch.Tensor:
    return torch.full((3,), float(path.stem))


class _Fragmenting:
    """Allocates 64 MB per batch in 100 kB tensors, below glibc's mmap threshold, and frees
    7 of every 8, which leaves 56 MB of holes between live blocks."""

    def __init__(self) -> None:
        self.kept: list[torch.Tensor] = []
        self.peaks: list[float] = []

    def __call__(self, x: torch.Tensor, items: list[LabelledItem]) -> dict[str, Any]:
        scratch = [torch.ones(25_000) for _ in range(_SCRATCH_MB * 10)]
        self.kept.extend(scratch[::8])
        self.peaks.append(_rss_mb())
        del scratch
        return {"mean": x.mean(dim=1)}


def test_freed_batch_memory_is_returned_between_batches(tmp_path: Path) -> None:
    items = [LabelledItem(tmp_path / f"{i}.npy", None) for i in range(12)]
    for item in items:
        item.path.touch()
    fn = _Fragmenting()
    after: list[float] = []

    def progress(done: int, total: int) -> None:
        if done:  # the first call comes before any batch
            after.append(_rss_mb())

    run_dataset(
        items, fn, tmp_path / "out", load=_load, batch_size=4, shard_size=8, progress=progress
    )
    assert len(fn.peaks) == len(after) == 3
    for peak, rest in zip(fn.peaks, after):
        # the scratch was resident at the peak; at least 3/4 of what was freed is given back
        assert peak - rest > 0.75 * _FREED_MB, (fn.peaks, after)
    # wiring: the outputs are still those of fn (the trim frees nothing in use)
    outputs = read_outputs(tmp_path / "out")
    np.testing.assert_array_equal(outputs["mean"], np.arange(12, dtype=np.float32))
