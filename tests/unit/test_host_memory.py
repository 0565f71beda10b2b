"""`keep_freed_memory`: after it, a freed block is reused from the heap instead of being faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# A 48 MiB block: above glibc's largest adaptive mmap threshold (32 MiB on 64-bit), so by default each
# allocation is a fresh mmap whose 12,288 pages fault in when written; below keep_freed_memory's 64 MiB.
ALLOCATE_AND_FREE = """
import resource, sys
import torch
from dlrm_dist.host_memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
for _ in range(10):
    torch.ones(12 << 20)  # the first few allocations fault their pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(12 << 20)  # 48 MiB of float32, written, then freed
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_BLOCK = (48 << 20) // 4096


def _faults(mode: str) -> tuple[str, int]:
    output = subprocess.run(
        [sys.executable, "-c", ALLOCATE_AND_FREE, mode], check=True, capture_output=True, text=True
    ).stdout.split()
    return output[0], int(output[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    default_kept, default_faults = _faults("default")
    kept, kept_faults = _faults("keep")
    assert (default_kept, kept) == ("False", "True")
    # By default every one of the 20 blocks faults in afresh; kept, they reuse pages already faulted in.
    assert default_faults > 10 * PAGES_PER_BLOCK
    assert kept_faults < PAGES_PER_BLOCK


def test_keep_freed_memory_is_a_no_op_off_glibc(monkeypatch):
    from dlrm_dist import host_memory

    monkeypatch.setattr(host_memory.sys, "platform", "darwin")
    assert host_memory.keep_freed_memory() is False
