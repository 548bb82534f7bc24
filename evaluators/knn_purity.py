"""kNN purity of induced subclasses against matched random partitions (paper Tab. 7).

If the induced subclasses of a class capture real structure, a sample's nearest neighbours
within its class mostly share its subclass. The purity of a random partition with the same
subclass sizes is the chance level (in expectation sum_k n_k/n * (n_k - 1)/(n - 1) per class,
whatever the embedding), so the gap between the two says how much structure the partition
follows. Neighbour lists depend only on the embedding, so they are computed once per class
and reused for every random draw, where only the labels change.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import torch

from bench.config.checks import is_int
from bench.errors import BenchError
from bench.evaluator import Evaluator, Metric
from bench.metrics.neighbours import neighbours
from bench.priors.subclass import split_classes
from bench.registry import register_evaluator

log = logging.getLogger(__name__)

SPACES = ("features", "latent")
DETAILS = "knn_purity.json"
CHUNK = 4096  # latent rows read at a time


@dataclass
class ClassNeighbours:
    """One evaluated class: its rows, their subclasses and each row's same-class neighbours."""

    label: int
    rows: np.ndarray  # (n,) indices into the full sample set
    subclass: np.ndarray  # (n,) subclass of each row
    neighbours: np.ndarray  # (n, k_c) positions within `rows`, self excluded, nearest first


def neighbour_lists(
    embeddings: np.ndarray, labels: np.ndarray, subclass: np.ndarray, k: int
) -> list[ClassNeighbours]:
    """Euclidean k nearest same-class neighbours (self excluded) of every sample of the classes
    that have at least two subclasses; classes with one subclass are skipped (their purity is 1
    by construction and says nothing). A class with n <= k samples uses its n - 1 others."""
    embeddings = np.asarray(embeddings, dtype=np.float64).reshape(len(labels), -1)
    labels, subclass = np.asarray(labels), np.asarray(subclass)
    lists, split = [], set(split_classes(labels, subclass))
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        k_c = min(k, len(rows) - 1)
        if c not in split or k_c < 1:
            continue
        lists.append(ClassNeighbours(int(c), rows, subclass[rows], neighbours(embeddings[rows], k_c)[1]))
    return lists


def sample_purity(subclass: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(n,) fraction of each sample's neighbours that share its subclass."""
    return np.mean(subclass[neighbours] == subclass[:, None], axis=1)


def pooled_purity(lists: list[ClassNeighbours], subclasses: list[np.ndarray] | None = None) -> float:
    """Mean sample purity over every sample of the evaluated classes (NaN when there are none).

    `subclasses` replaces each class's own labels (the random draws)."""
    labels = subclasses or [cls.subclass for cls in lists]
    values = [sample_purity(sub, cls.neighbours) for sub, cls in zip(labels, lists)]
    return float(np.mean(np.concatenate(values))) if values else float("nan")


def random_purities(lists: list[ClassNeighbours], n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """(n_draws,) pooled purity of random partitions: each draw shuffles the subclass labels
    within every class, which keeps the subclass sizes and the neighbour lists."""
    return np.array(
        [pooled_purity(lists, [rng.permutation(cls.subclass) for cls in lists]) for _ in range(n_draws)]
    )


def knn_purity(embeddings: np.ndarray, labels: np.ndarray, subclass: np.ndarray, k: int = 10) -> float:
    """Mean over samples of the share of their k nearest same-class neighbours in the same subclass.

    Only classes with >= 2 subclasses count (as in the paper); NaN when there are none."""
    return pooled_purity(neighbour_lists(embeddings, labels, subclass, k))


def random_partition_purity(
    embeddings: np.ndarray,
    labels: np.ndarray,
    subclass: np.ndarray,
    k: int,
    n_draws: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """kNN purity of `n_draws` random partitions with the subclass sizes of `subclass` per class."""
    return random_purities(neighbour_lists(embeddings, labels, subclass, k), n_draws, rng)


def chance_purity(subclass: np.ndarray) -> float:
    """Expected purity of a random partition of one class: sum_k n_k/n * (n_k - 1)/(n - 1)."""
    sizes = np.unique(subclass, return_counts=True)[1].astype(np.float64)
    n = sizes.sum()
    return float(np.sum(sizes / n * (sizes - 1) / (n - 1)))


# metric -> label; per space s: `<metric>/s` titled "<label> (s)"
LABELS = {
    "knn_purity": "kNN purity",
    "knn_purity_random": "kNN purity random",
    "knn_purity_gap": "kNN gap",
    "knn_purity_gap_std": "kNN gap std",
}
HIGHER = ("knn_purity", "knn_purity_gap")  # the qualities; the random level and its std are references


@register_evaluator("knn_purity")
class KNNPurity(Evaluator):
    """kNN purity of the method's induced subclasses vs matched random partitions, in two spaces.

    Uses `cell.prior.tensors["assignment"]` (the induced subclass of every training row) and
    the training split in the 'features' space (domain features, `cell.features("train")`)
    and the 'latent' space (`cell.latents` flattened, reduced by a seeded PCA to `pca_dim`
    components when wider, fitted on at most `pca_fit_rows` rows; `pca_dim=None` keeps every
    dimension). Only classes with >= 2 induced subclasses are embedded. A space the cell lacks is
    skipped. Metrics per space s: `knn_purity/s`, `knn_purity_random/s` (mean over `n_draws`
    random partitions), `knn_purity_gap/s` (purity minus random mean: the paper's number) and
    `knn_purity_gap_std/s` (std of the random draws: the gap's noise scale). The random level
    and its std are reference values, not qualities; they are marked lower-is-better only
    because every metric needs a direction. Per-class values go to out_dir/knn_purity.json.
    Returns {} (and logs why) for methods without induced subclasses.
    """

    applies_to = ("vector", "image")
    metrics = tuple(
        Metric(f"{metric}/{space}", f"{label} ({space})", metric in HIGHER, on_features=space == "features")
        for metric, label in LABELS.items()
        for space in SPACES
    )

    def __init__(self, k: int = 10, n_draws: int = 100, pca_dim: int | None = 50, pca_fit_rows: int = 5000):
        for key, value in (("k", k), ("n_draws", n_draws), ("pca_fit_rows", pca_fit_rows)):
            if not is_int(value) or value < 1:
                raise BenchError(f"knn_purity.{key} must be an integer >= 1, got {value!r}")
        if pca_dim is not None and (not is_int(pca_dim) or pca_dim < 1):
            raise BenchError(f"knn_purity.pca_dim must be None (no PCA) or an integer >= 1, got {pca_dim!r}")
        self.k, self.n_draws, self.pca_dim, self.pca_fit_rows = k, n_draws, pca_dim, pca_fit_rows

    def evaluate(self, cell) -> dict[str, float]:
        """Purity, random level, gap and its noise per available embedding space."""
        assignment = cell.induced_subclasses()
        if assignment is None:
            return {}
        labels = cell.train.y.numpy()
        rows = np.flatnonzero(np.isin(labels, split_classes(labels, assignment)))
        if not len(rows):
            log.info("knn_purity: every class has a single induced subclass; nothing to measure")
            return {}
        metrics, details = {}, {}
        for space in SPACES:
            embeddings = self._embeddings(cell, space, rows)
            if embeddings is None:
                continue
            lists = neighbour_lists(embeddings, labels[rows], assignment[rows], self.k)
            # the same seed in both spaces: each space scores the same random partitions
            draws = random_purities(lists, self.n_draws, np.random.default_rng(cell.seed))
            purity = pooled_purity(lists)
            metrics |= {
                f"knn_purity/{space}": purity,
                f"knn_purity_random/{space}": float(draws.mean()),
                f"knn_purity_gap/{space}": purity - float(draws.mean()),
                f"knn_purity_gap_std/{space}": float(draws.std()),
            }
            details[space] = self._per_class(lists, cell)
        if details:
            (cell.out_dir / DETAILS).write_text(
                json.dumps(
                    {"k": self.k, "n_draws": self.n_draws, "pca_dim": self.pca_dim, "spaces": details},
                    indent=2,
                )
            )
        return metrics

    def _embeddings(self, cell, space: str, rows: np.ndarray) -> np.ndarray | None:
        """The given training rows in `space`, or None (logged) when the cell lacks it."""
        if space == "features":
            if cell.extractor is None:
                log.info("knn_purity: no feature extractor; skipping the features space")
                return None
            return cell.features("train")[rows]
        if cell.latents is None:
            log.info("knn_purity: no training latents; skipping the latent space")
            return None
        return self._latent_embeddings(cell.latents, rows, cell.seed)

    def _latent_embeddings(self, latents: torch.Tensor, rows: np.ndarray, seed: int) -> np.ndarray:
        """Flattened latents of `rows`, projected on `pca_dim` principal components when wider.

        Latents are memory-mapped and can be large, so the seeded PCA is fitted on at most
        `pca_fit_rows` rows and every row is read and projected in chunks."""
        chunks = np.array_split(rows, max(1, len(rows) // CHUNK))
        flat = lambda idx: latents[torch.from_numpy(idx)].reshape(len(idx), -1).float().numpy()  # noqa: E731
        dim = int(np.prod(latents.shape[1:]))
        if self.pca_dim is None or dim <= self.pca_dim or len(rows) <= self.pca_dim:
            return np.concatenate([flat(c) for c in chunks])
        fit = np.sort(
            np.random.default_rng(seed).choice(rows, min(len(rows), self.pca_fit_rows), replace=False)
        )
        from sklearn.decomposition import (
            PCA,  # scikit-learn loads when used, not with the plugin (a fast CLI)
        )

        pca = PCA(self.pca_dim, svd_solver="randomized", random_state=seed).fit(flat(fit))
        return np.concatenate([pca.transform(flat(c)) for c in chunks])

    def _per_class(self, lists: list[ClassNeighbours], cell) -> list[dict]:
        """Per evaluated class: size, subclass sizes, purity and its analytic chance level."""
        return [
            {
                "class": cell.class_names[cls.label],
                "n": len(cls.rows),
                "subclass_sizes": np.unique(cls.subclass, return_counts=True)[1].tolist(),
                "k": int(cls.neighbours.shape[1]),
                "purity": float(sample_purity(cls.subclass, cls.neighbours).mean()),
                "chance": chance_purity(cls.subclass),
            }
            for cls in lists
        ]
