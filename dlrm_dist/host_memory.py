"""Keeps glibc's allocator from giving freed tensor memory back to the kernel between training steps.

A CPU training step allocates and frees the same few-megabyte activations and gradients every step
(at the criteo_kaggle shapes, batch 2048: [2048, 512] layers, the [2048, 27, 27] interaction). glibc
serves blocks above its mmap threshold with fresh `mmap`s and trims the top of its heap once more than
the trim threshold is free, so each step faults those pages in again: 1,500-2,600 minor page faults a
step here, about 10% of a 44 ms step on this repository's 2-core VM. Raising both thresholds (what
`mallopt` is for; PyTorch's CPU tuning guide reaches the same end by swapping in jemalloc or tcmalloc,
which this project cannot assume are installed) keeps the blocks in the heap for reuse: 30-90 faults a
step, 39-41 ms. The cost is that the process keeps its peak heap instead of shrinking after it.

Setting only the trim threshold is worse than nothing: any explicit setting turns off glibc's adaptive
mmap threshold, and every block above its 128 KiB default is then mmapped afresh (20,000 faults a
step, 61-69 ms). Both are set, or neither.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt's parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 << 20
"""Blocks below this come from the heap: every activation of a training batch (a 16k-sample evaluation
batch's [16384, 512] layer is 32 MiB); embedding tables are still mmapped."""
TRIM_THRESHOLD_BYTES = 1 << 30
"""Free memory the heap keeps at its top before returning any to the kernel."""


def keep_freed_memory() -> bool:
    """Raises glibc's mmap and trim thresholds for this process (see the module docstring).

    Returns:
        True when both were set; False where the C library is not glibc (macOS, musl: nothing changed).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold goes first, so that a refusal leaves the
    # adaptive default in place rather than a trim threshold alone.
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        return False
    return mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
