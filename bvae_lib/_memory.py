"""glibc's malloc and the large, short-lived buffers of a CPU forward pass.

By default glibc serves a block above its mmap threshold (dynamic, at most 32 MB) straight from
the kernel and gives it back when it is freed; the next batch faults the same pages in again,
zeroed. The Burgess encoder's first convolution on a batch of 256 images -- the batch the
metrics encode with -- writes a 33.5 MB activation, just above that, so scoring a model spent
more time in the kernel than in the network (``benchmarks/bench_malloc.py``; the figures are in
``benchmarks/README.md``). Raising the threshold to 64 MB and keeping up to 1 GB of freed memory in
the heap lets each batch reuse the previous one's pages. No result changes; only where the
bytes live.
"""

from __future__ import annotations

import ctypes
import platform

#: glibc's mmap threshold and trim threshold, in bytes (``mallopt`` / the environment below).
MMAP_THRESHOLD = 64 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024

#: The same settings as environment variables, for a process not started yet (a chapter's
#: kernel, a benchmark's workload): glibc reads them when the process starts.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
              "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3      # glibc's malloc.h
_applied: bool | None = None


def keep_freed_buffers() -> bool:
    """Apply :data:`MMAP_THRESHOLD` and :data:`TRIM_THRESHOLD` to this process's malloc.

    Returns True where glibc accepted both; False elsewhere (macOS, Windows, musl), where
    nothing changes. Calling it again does nothing more."""
    global _applied
    if _applied is None:
        _applied = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(None)
                _applied = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
            except (OSError, AttributeError):
                _applied = False
    return _applied
