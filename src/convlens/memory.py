"""How the process's C allocator treats the memory a forward or backward pass frees.

A CPU forward pass allocates and frees hundreds of megabytes of activations per batch.
Two glibc defaults make that slow, and one makes long runs grow:

- **Big blocks are mapped and unmapped every time.** glibc serves a block above its mmap
  threshold (128 kB, raised by itself to at most 32 MB) with a fresh ``mmap`` and unmaps it
  on ``free``, and it returns the top of the heap to the OS beyond the trim threshold. Each
  batch's activations then come back as new pages, and the kernel zero-fills every one of
  them on first touch: on EfficientNet-Lite0, batch 32, about 6 million page faults per 256
  images, and the forward pass ran 3x slower than with the pages kept (1.6 s against 0.5 s
  per batch; benchmarks/README.md, "Allocator"). :func:`keep_freed_memory` raises both
  thresholds to 1 GiB and keeps every thread on one arena (a thread's own arena maps any
  block above 64 MB), so freed activations are reused by the next batch. This is the
  in-process form of what PyTorch's CPU performance guide gets by preloading jemalloc or
  tcmalloc. The ``convlens`` command turns it on for every command (``CONVLENS_MALLOC=default``
  keeps glibc's defaults); library users call it once, at the start of a script. It changes
  no value, only where memory comes from; the cost is that freed memory stays in the
  process (up to the largest working set) instead of going back to the OS.
- **Holes below a live block are never returned.** A small block that lives on above
  freed ones (a batch's codes, kept in the shard buffer until the shard is written) pins
  them, and over a dataset run the resident size creeps up with the number of images
  although nothing leaks (+0.3-0.4 MB per image on Lite0 ``features``). ``malloc_trim(0)``
  hands the free pages of every arena back (:func:`release_freed_memory`). Trimming after
  every batch kept memory flat but threw away the pages the next batch needs (the page
  faults above again), so the dataset runner trims only when the resident size passes a
  ceiling (:class:`ResidentCeiling`): memory stays flat in the number of images, and a
  trim comes every few dozen batches instead of every batch.

Elsewhere (macOS, Windows, musl) every function here is a no-op that returns False: those
allocators keep and return memory their own way and have no such calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from typing import Any

__all__ = [
    "KEEP_THRESHOLD",
    "ResidentCeiling",
    "keep_freed_memory",
    "kept_freed_memory",
    "release_freed_memory",
    "resident_bytes",
]

#: mmap and trim thresholds :func:`keep_freed_memory` sets: blocks and free heap tops
#: below 1 GiB stay in the process (a batch-32 activation of Lite0 is 51 MB)
KEEP_THRESHOLD = 1 << 30

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_kept = False


@functools.cache
def _glibc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim, mallopt = libc.malloc_trim, libc.mallopt  # glibc only: musl has neither
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return libc


def keep_freed_memory() -> bool:
    """Keep freed blocks in the process for reuse instead of unmapping them (see the module
    docstring); True when the allocator took the settings. Process-wide and idempotent.

    Call it before the first big allocation: blocks already mapped stay mapped, and threads
    that already have their own arena keep it.
    """
    global _kept
    libc = _glibc()
    if libc is None:
        return False
    if not _kept:
        ok = libc.mallopt(_M_MMAP_THRESHOLD, KEEP_THRESHOLD) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, KEEP_THRESHOLD) == 1 and ok
        libc.mallopt(_M_ARENA_MAX, 1)  # best effort: only arenas made later are affected
        _kept = ok
    return _kept


def kept_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` is in effect in this process."""
    return _kept


def keep_freed_memory_unless_disabled() -> bool:
    """:func:`keep_freed_memory`, unless ``CONVLENS_MALLOC=default`` asks for glibc's defaults
    (what the ``convlens`` command runs at start)."""
    if os.environ.get("CONVLENS_MALLOC", "").strip().lower() == "default":
        return False
    return keep_freed_memory()


def release_freed_memory() -> bool:
    """Give the heap's free pages back to the OS; True when the allocator supports it.

    Frees nothing that is still in use: only what Python, numpy and torch already freed.
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def resident_bytes() -> int | None:
    """The process's resident size in bytes (Linux ``/proc/self/statm``), None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class ResidentCeiling:
    """Trim the heap (:func:`release_freed_memory`) only when the resident size passes a
    ceiling: call :meth:`check` after each batch.

    The ceiling is ``headroom`` times the largest resident size seen over the first
    ``warmup`` checks (a shard's batches: the working set at its largest), and it rises to
    ``headroom`` times the size after a trim when a trim cannot get under it (the working
    set itself grew: bigger images), so a run never trims batch after batch.
    """

    def __init__(self, warmup: int = 8, headroom: float = 1.15) -> None:
        if warmup < 1 or headroom <= 1:
            raise ValueError("warmup must be >= 1 and headroom > 1")
        self.warmup, self.headroom = warmup, headroom
        self.ceiling: float | None = None
        self.trims = 0
        self._seen = 0
        self._largest = 0

    def check(self) -> bool:
        """Trim if the resident size is above the ceiling; True when it trimmed."""
        rss = resident_bytes()
        if rss is None:  # not Linux: trim as the allocator allows (a no-op off glibc)
            return release_freed_memory()
        self._seen += 1
        if self.ceiling is None:
            self._largest = max(self._largest, rss)
            if self._seen >= self.warmup:
                self.ceiling = self.headroom * self._largest
            return False
        if rss <= self.ceiling:
            return False
        trimmed = release_freed_memory()
        self.trims += trimmed
        after = resident_bytes() or rss
        if after > self.ceiling:
            self.ceiling = self.headroom * after
        return trimmed
