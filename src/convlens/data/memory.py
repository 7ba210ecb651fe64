"""Hand memory that was freed back to the operating system (glibc's ``malloc_trim``).

A forward pass allocates and frees hundreds of megabytes of activations per batch. glibc
keeps freed heap memory for reuse, and it can only give the top of a heap back by itself:
a small block that lives on above the freed ones (a batch's codes, kept in the shard
buffer until the shard is written) pins everything below it. Over a dataset run the
resident size then creeps up with the number of images even though nothing leaks
(measured on EfficientNet-Lite0 ``features``: +0.3-0.4 MB per image, gone after a trim;
benchmarks/README.md, "Dataset throughput"). ``malloc_trim(0)`` returns the free pages of
every arena (``madvise``), so the dataset runner calls :func:`release_freed_memory` after
each batch: peak memory stays that of one batch. It costs a few milliseconds per call.

Elsewhere (macOS, Windows, musl) this is a no-op: those allocators return memory
differently and have no such call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable

__all__ = ["release_freed_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only: musl has no such symbol
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Give the heap's free pages back to the OS; True when the allocator supports it.

    Frees nothing that is still in use: only what Python, numpy and torch already freed.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
