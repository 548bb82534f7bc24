"""A short exclusive section across processes: `with exclusive(path): read, modify, write`.

For files several runs update in place (grid.json): each takes an advisory lock on a sibling
lock file (fcntl.flock, honoured across processes on one host, and on NFS where the kernel maps
it to a POSIX lock), so concurrent read-modify-write cycles happen one after the other instead
of the last writer silently dropping the others' changes. The lock file holds nothing: a
damaged or leftover one is harmless, and the kernel releases the lock when its holder dies.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if absent, mode from the umask) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another process holds it
        yield
    finally:
        os.close(fd)  # closing releases the lock
