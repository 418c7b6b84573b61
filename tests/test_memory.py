"""runtime.memory: freed heap pages go back to the system between batches (glibc), a no-op elsewhere."""

from __future__ import annotations

import platform
import sys

import pytest
import torch

from logit_processors.runtime.memory import release_freed_memory


def resident_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024


def test_release_is_safe_to_call():
    release_freed_memory()
    release_freed_memory()


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="malloc_trim is glibc's")
def test_fragmented_heap_is_given_back():
    # Many mid-sized blocks (below glibc's mmap threshold, so they live in the heap), every other
    # one kept: the freed half is fragmented between live blocks and stays resident until trimmed.
    blocks = [torch.ones(64 * 1024) for _ in range(4000)]  # 4,000 x 256 kB = 1 GB
    kept = blocks[::2]
    del blocks
    before = resident_mb()
    release_freed_memory()
    after = resident_mb()
    # ~500 MB of free pages between live blocks: trimming returns most of them (page-granular)
    assert before - after > 250, (before, after)
    del kept
