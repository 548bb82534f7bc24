"""release_freed_memory: what a worker thread freed leaves the resident memory."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from bench.runtime.heap import _malloc_trim, release_freed_memory

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


@pytest.mark.skipif(_malloc_trim() is None, reason="this C library has no malloc_trim")
def test_memory_a_thread_freed_is_given_back():
    def churn():  # 200 MB in 64 KiB blocks (below glibc's mmap threshold: its arena), all but the last freed
        blocks = [np.ones(2**13) for _ in range(3200)]
        keep.append(blocks[-1])
        del blocks

    keep: list = []
    before = resident_bytes()
    thread = threading.Thread(target=churn)
    thread.start()
    thread.join()
    held = resident_bytes()
    assert held > before + 150 * 2**20  # retained by the thread's arena
    assert release_freed_memory()
    assert resident_bytes() < held - 100 * 2**20  # most of the 200 MB went back
