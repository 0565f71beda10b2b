"""Keeps memory a run has freed for its next chunk, instead of handing it back to the OS at once.

Each phase of a prep run allocates and frees buffers of the same sizes chunk after chunk (a chunk's bytes,
its parsed columns, their hashes and ids). By default the allocators in play give freed memory back to
the OS soon, so the next chunk faults the same amount in again:
  - pyarrow's mimalloc purges freed pages after 10 ms (`MIMALLOC_PURGE_DELAY`);
  - glibc's malloc, numpy's, unmaps every block above its mmap threshold when it is freed (the threshold
    grows with use, but starts at 128 KiB in each new process);
  - numpy asks for transparent huge pages for every array of 4 MiB or more (`NUMPY_MADVISE_HUGEPAGE`),
    and each huge page is zeroed whole when it is first touched.
Page faults are costly on virtual machines in particular. On the 2-core VM this was measured on, 50 MB
of fresh memory took 320-580 ms to touch and 9 ms once reused, and `dlrm-prep table` on the 1M-row
benchmark CSV (`benchmarks/prep_throughput.py`, vocabulary, 1 worker) took 88k faults and a median
2.74 s by default against 28k faults and 2.45 s with the first two settings (4 alternating runs each);
without numpy's huge pages as well, 2.52-2.64 s against 2.67-2.85 s (4 runs each, at a slower hour).

Memory stays bounded: what is kept is what the run already used and will reuse (peak RSS 292 MB against
263 MB in those runs). A setting the user has made in the environment wins.
"""

from __future__ import annotations

import ctypes
import os
import platform

# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit (32 MiB).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20
_TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> None:
    """Sets the allocators to keep freed memory: call it before numpy and pyarrow are imported (they
    read these options when they load) and again in each worker process (mallopt acts on its own
    process only; the workers inherit the environment)."""
    os.environ.setdefault("MIMALLOC_PURGE_DELAY", "-1")
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    user_set = {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ)
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or user_set:
        return
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
