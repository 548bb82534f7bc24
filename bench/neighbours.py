"""Exact nearest neighbours for evaluators: each query's nearest reference row, in float64.

Shared by IRS (which training image a query retrieves) and the memorisation check (how far the
nearest training image is). Both sides are processed in chunks, so the distance matrix stays
(chunk, chunk) and a lazy reference (image files) is read one chunk at a time.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.imagefiles import as_tensor


def nearest(queries, reference, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of the L2-nearest `reference` row of every query row (ties: lowest index)."""
    q = torch.as_tensor(as_tensor(queries)).reshape(len(queries), -1).double()
    best = torch.full((len(q),), float("inf"), dtype=torch.float64)
    index = torch.zeros(len(q), dtype=torch.int64)
    for start in range(0, len(reference), chunk):
        ref = torch.as_tensor(as_tensor(reference[start:start + chunk])).reshape(-1, q.shape[1]).double()
        for rows in range(0, len(q), chunk):
            dist, arg = torch.cdist(q[rows:rows + chunk], ref).min(dim=1)
            closer = dist < best[rows:rows + chunk]  # strict: an earlier chunk keeps a tie
            best[rows:rows + chunk] = torch.where(closer, dist, best[rows:rows + chunk])
            index[rows:rows + chunk] = torch.where(closer, arg + start, index[rows:rows + chunk])
    return best.numpy(), index.numpy()
