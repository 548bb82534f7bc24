"""Give the memory a finished phase freed back to the operating system (glibc's `malloc_trim`).

glibc keeps freed memory in its arenas for reuse, and every thread that allocates gets an arena of
its own. A phase that works on worker threads (optprior's per-class induction, its per-group
gradient tasks) leaves what its threads freed in their arenas, where the main thread's next large
allocations cannot use it: the process's resident memory then holds the phase's peak on top of
the next one's, by an amount that depends on how the threads happened to interleave. Measured on
optprior's offline stage at n = 20,000, D = 16,384 (issue 26): up to 1.2 GiB retained, so the
stage's peak varied from run to run (5.22 and 6.57 GiB on one machine); trimmed, the parts after
the induction peaked at 4.1-4.3 GiB. `release_freed_memory()` between phases returns the free
pages of every arena (malloc_trim(0)), so a phase's peak no longer depends on the phases before it.
A no-op (False) where the C library has no malloc_trim (macOS, musl).
"""

from __future__ import annotations

import ctypes
import functools
import sys


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where this C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL("libc.so.6"), "malloc_trim", None)
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Return the free memory of every malloc arena to the OS; whether any was released."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
