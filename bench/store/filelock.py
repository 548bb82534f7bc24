"""A short exclusive section across processes: `with exclusive(path): read, modify, write`.

For files several runs update in place (grid.json): each takes an advisory lock on a sibling
lock file (fcntl.flock, honoured across processes on one host, and on NFS where the kernel maps
it to a POSIX lock), so concurrent read-modify-write cycles happen one after the other instead
of the last writer silently dropping the others' changes. The lock file holds nothing: a
damaged or leftover one is harmless, and the kernel releases the lock when its holder dies.

`building(folder)` is a lock for work several cells share (a dataset's latent cache, its
feature extractor, its no-augmentation classifiers): cells that run side by side would otherwise
both compute it and keep one copy (bench.store.artifacts.stage_dir). Under the lock, the second
cell waits, then finds the artifact complete and loads it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if absent, mode from the umask) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another process holds it
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def building(folder: Path) -> Iterator[None]:
    """Hold the lock of the shared artifact `folder` (a sibling `.<name>.building` file) while it is
    checked and, if missing, built: one process builds it, the others wait and then reuse it.

    The lock file is removed when the holder is done, so a run leaves nothing behind: it is
    unlinked while still locked, and a waiter that then gets the lock of the unlinked file sees
    that the name no longer points to it and locks the current one instead.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f".{folder.name}.building"
    fd = _locked(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _locked(path: Path) -> int:
    """A descriptor of `path` holding its exclusive lock, `path` still naming the locked file."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder before us removed it: lock the file now under that name
