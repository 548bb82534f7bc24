"""What a split's data is, as a short digest: caches and records built from other data are stale.

A stage's config hash says how it was computed, not from what: re-save a label CSV with its rows
in another order (same settings, same count) and latents cached in the old order would be paired
with the new labels. The fingerprint covers what a stage reads, in order:

- the labels (and ground-truth subclasses, where the dataset knows them), row by row;
- the sample ids, in order;
- the samples themselves: for file-backed images (bench.data.imagefiles.ImageFiles) each file's path,
  size and modification time (a stat per file, no decoding: cheap for 100k images), for samples
  held in memory their bytes.

Reordering, editing, adding or replacing a file changes the fingerprint; copying the dataset to
another folder does too (paths are part of it), which costs one re-encode and is never wrong.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

DIGITS = 16


def split_fingerprint(split) -> str:
    """A digest of a split's labels, ids and samples (see the module docstring)."""
    h = hashlib.sha256()
    for tensor in (split.y, getattr(split, "subclass", None)):
        _update_array(h, tensor)
    h.update(json.dumps([str(i) for i in split.ids] if split.ids is not None else None).encode())
    paths = getattr(split.x, "paths", None)
    if paths is not None:  # lazy image files: their identity on disk, not their pixels
        for path in paths:
            h.update(file_identity(path).encode())
    else:
        _update_array(h, split.x)
    return h.hexdigest()[:DIGITS]


def _update_array(h, tensor) -> None:
    """Add an array's shape, dtype and bytes to the digest (None adds a marker)."""
    if tensor is None:
        h.update(b"none")
        return
    array = np.ascontiguousarray(tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else tensor)
    h.update(f"{array.shape}{array.dtype}".encode())
    h.update(array.tobytes())


def file_identity(path) -> str:
    """`path|size|mtime_ns`, or `path|missing` (a missing file fails later, where it is read)."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}|missing\0"
    return f"{path}|{st.st_size}|{st.st_mtime_ns}\0"
