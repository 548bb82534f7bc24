"""Exact nearest neighbours for every evaluator: the project's one neighbour search.

`nearest`: each query's nearest reference row, in float64, both sides in chunks (the distance
matrix stays (chunk, chunk) and a lazy reference of image files is read one chunk at a time);
used by IRS (which training image a query retrieves), memorisation (how far the nearest training
image is) and coverage (is a real point's nearest fake inside its ball). `neighbours`: the k
nearest other rows of each row of one set (scikit-learn's exact NearestNeighbors); used by
coverage (the k-NN ball's radius) and kNN purity (whose neighbours share a subclass).
"""

from __future__ import annotations

import numpy as np
import torch

from bench.data.imagefiles import as_tensor


def nearest(queries, reference, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of the L2-nearest `reference` row of every query row (ties: lowest index)."""
    q = torch.as_tensor(as_tensor(queries)).reshape(len(queries), -1).double()
    best = torch.full((len(q),), float("inf"), dtype=torch.float64)
    index = torch.zeros(len(q), dtype=torch.int64)
    for start in range(0, len(reference), chunk):
        ref = torch.as_tensor(as_tensor(reference[start : start + chunk])).reshape(-1, q.shape[1]).double()
        for rows in range(0, len(q), chunk):
            dist, arg = torch.cdist(q[rows : rows + chunk], ref).min(dim=1)
            closer = dist < best[rows : rows + chunk]  # strict: an earlier chunk keeps a tie
            best[rows : rows + chunk] = torch.where(closer, dist, best[rows : rows + chunk])
            index[rows : rows + chunk] = torch.where(closer, arg + start, index[rows : rows + chunk])
    return best.numpy(), index.numpy()


def neighbours(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices), each (n, k): the k nearest other rows of every row, nearest first
    (a row is never its own neighbour; an exact duplicate of it is, at distance 0)."""
    from sklearn.neighbors import NearestNeighbors

    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    return NearestNeighbors(n_neighbors=k).fit(points).kneighbors()  # no query: self excluded
