"""Sliced Wasserstein distance and subclass coverage per class, for vector (2-D) benchmarks."""

from __future__ import annotations

import numpy as np

from bench.config.checks import is_int
from bench.context import INIT, SOURCE
from bench.data.imagefiles import flat_float64
from bench.data.longtail import tail_classes
from bench.dataset import Split
from bench.errors import BenchError
from bench.evaluator import Evaluator, Metric, directions
from bench.metrics.neighbours import nearest, neighbours
from bench.registry import register_evaluator


def random_directions(n_projections: int, dim: int, seed: int) -> np.ndarray:
    """`n_projections` unit vectors drawn uniformly on the sphere in `dim` dimensions."""
    v = np.random.default_rng(seed).standard_normal((n_projections, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, directions: np.ndarray) -> float:
    """SW_2 between two equal-size point sets: sqrt of the mean over directions of 1-D W_2^2.

    In 1-D with equal n the optimal coupling matches sorted values, so W_2^2 is the mean
    squared difference of the sorted projections.
    """
    if len(a) != len(b):
        raise ValueError(f"sliced_wasserstein needs equal sizes, got {len(a)} and {len(b)}")
    pa = np.sort(a @ directions.T, axis=0)
    pb = np.sort(b @ directions.T, axis=0)
    return float(np.sqrt(np.mean((pa - pb) ** 2)))


def subclass_coverage(
    real: np.ndarray, real_subclass: np.ndarray, fake: np.ndarray, k: int
) -> dict[int, float]:
    """Coverage (Naeem et al., 2020) of each ground-truth subclass of one class.

    A real point is covered when some fake point lies strictly inside its k-NN ball, whose
    radius is the distance to its k-th nearest real neighbour of the same class (self
    excluded); a subclass's coverage is the covered fraction of its real points. k is capped
    at n_real - 1 so tiny classes still get a ball.
    """
    k = min(k, len(real) - 1)
    if k < 1:
        return {}
    radius = neighbours(real, k)[0][:, k - 1]  # distance to the k-th nearest other real point
    if len(fake):
        covered = nearest(real, fake)[0] < radius
    else:
        covered = np.zeros(len(real), dtype=bool)
    return {int(s): float(covered[real_subclass == s].mean()) for s in np.unique(real_subclass)}


def equal_size(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the larger set without replacement to the smaller one's size."""
    n = min(len(a), len(b))
    pick = lambda v: v if len(v) == n else v[np.sort(rng.choice(len(v), n, replace=False))]  # noqa: E731
    return pick(a), pick(b)


@register_evaluator("swd")
class SlicedWasserstein(Evaluator):
    """Per-class SW_2 between synthetic and held-out samples, plus tail subclass coverage.

    Metrics: `swd/all` (mean over classes that have synthetic samples), `swd/tail` (the same
    over `tail_classes` of the train counts), `swd/class/<name>`, and `coverage/tail` (mean
    over every (tail class, subclass) pair, a tail class without synthetic samples covering
    nothing; only when the test split has ground-truth subclasses). The same metrics on the
    untrained model's samples (`cell.synthetic_init`) come back with the suffix `@init`, and on
    the method's source draws with no flow (`cell.synthetic_source`) with `@source`. Directions
    and subsampling depend only on `seed`, so every class, model and method is measured with the
    same projections. `higher_is_better` gains the per-class names of a cell when `evaluate` runs.
    """

    applies_to = ("vector",)
    metrics = (
        Metric("swd/all", "SWD all", False, headline=True, rank=60),
        Metric("swd/tail", "SWD tail", False, headline=True, rank=50),
        Metric("coverage/tail", "coverage tail", True, headline=True, rank=70),
        Metric("swd/class", "SWD per class", False),
    )  # swd/class/<name>
    higher_is_better = directions(metrics[:3], ("", INIT, SOURCE))

    def __init__(self, n_projections: int = 256, seed: int = 0, coverage_k: int = 5):
        for key, value in (("n_projections", n_projections), ("coverage_k", coverage_k)):
            if not is_int(value) or value < 1:
                raise BenchError(f"swd.{key} must be an integer >= 1, got {value!r}")
        if not is_int(seed):
            raise BenchError(f"swd.seed must be an integer, got {seed!r}")
        self.n_projections, self.seed, self.coverage_k = n_projections, seed, coverage_k
        self.higher_is_better = dict(type(self).higher_is_better)  # per-class names added per cell

    def evaluate(self, cell) -> dict[str, float]:
        """SW_2 and coverage for the trained model's samples and each reference set the cell has."""
        tail = tail_classes(cell.train.counts(cell.dataset.n_classes))
        metrics = {}
        for suffix, name in cell.scored_sets("synthetic"):
            metrics |= {key + suffix: v for key, v in self._metrics(cell.split(name), cell, tail).items()}
        self.higher_is_better |= {name: name.startswith("coverage") for name in metrics}
        return metrics

    def _metrics(self, synthetic: Split, cell, tail: list[int]) -> dict[str, float]:
        real_x, fake_x = flat_float64(cell.test.x), flat_float64(synthetic.x)
        per_class = self._per_class_swd(
            real_x, cell.test.y.numpy(), fake_x, synthetic.y.numpy(), cell.dataset.n_classes
        )
        metrics = {f"swd/class/{cell.class_names[c]}": v for c, v in per_class.items()}
        if per_class:  # classes without synthetic samples (e.g. untouched head classes) are left out
            metrics["swd/all"] = float(np.mean(list(per_class.values())))
        if any(c in per_class for c in tail):
            metrics["swd/tail"] = float(np.mean([per_class[c] for c in tail if c in per_class]))
        if cell.test.subclass is not None:
            coverage = self._tail_coverage(real_x, fake_x, synthetic, cell.test, tail)
            if coverage:
                metrics["coverage/tail"] = float(np.mean(coverage))
        return metrics

    def _per_class_swd(self, real_x, real_y, fake_x, fake_y, n_classes: int) -> dict[int, float]:
        directions = random_directions(self.n_projections, real_x.shape[1], self.seed)
        per_class = {}
        for c in range(n_classes):
            a, b = fake_x[fake_y == c], real_x[real_y == c]
            if len(a) and len(b):
                a, b = equal_size(a, b, np.random.default_rng([self.seed, c]))
                per_class[c] = sliced_wasserstein(a, b, directions)
        return per_class

    def _tail_coverage(self, real_x, fake_x, synthetic: Split, test: Split, tail) -> list[float]:
        values = []
        for c in tail:
            real, fake = test.y.numpy() == c, synthetic.y.numpy() == c
            subclass = test.subclass.numpy()[real]
            coverage = subclass_coverage(real_x[real], subclass, fake_x[fake], self.coverage_k)
            values.extend(coverage.values())
        return values
