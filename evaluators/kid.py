"""Kernel distance (KID) between synthetic and real domain features, per augmented class.

FID fits a Gaussian to each side, and its estimate is biased upward at small n, by an amount
that depends on n and on the feature dimension: a per-class FID on the 30 images of a tail class
is mostly that bias. KID (Bińkowski et al. 2018) is the squared maximum mean discrepancy under
the cubic polynomial kernel k(x, y) = (x . y / d + 1)^3, whose U-statistic estimate is unbiased
at any n, so tail classes of different sizes can be compared. It is computed by torchmetrics'
`KernelInceptionDistance`, the field's implementation, on bench's domain features (an identity
module stands in for Inception), on the same equal-n pairs as FID. Each subset is the whole pair
(`subset_size` = n, at most `max_subset`), so the value is the estimate on all samples.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from bench.config.checks import is_int
from bench.context import INIT, SOURCE
from bench.errors import BenchError
from bench.evaluator import Evaluator, Metric, directions
from bench.evaluators.fid import REFERENCES, per_class_distance
from bench.registry import register_evaluator


class Features(torch.nn.Identity):
    """The 'feature extractor' torchmetrics runs on each batch: features are passed in computed."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


def kid(
    fake: np.ndarray, real: np.ndarray, seed: int = 0, max_subset: int = 1000, subsets: int = 10
) -> float:
    """Unbiased squared MMD (cubic polynomial kernel) between two (n, d) feature sets, torchmetrics'
    KID with subsets of min(n_fake, n_real, max_subset) rows drawn under `seed`."""
    from torchmetrics.image.kid import KernelInceptionDistance  # loads when used (a fast CLI)

    size = min(len(fake), len(real), max_subset)
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per side, got {len(fake)} and {len(real)}")
    with warnings.catch_warnings():  # "will save all extracted features": that is the point, here
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        # sync_on_compute=False: on a launched cell rank 0 alone computes it; torchmetrics would all-gather
        metric = KernelInceptionDistance(
            feature=Features(fake.shape[1]), subsets=subsets, subset_size=size, sync_on_compute=False
        )
    metric.update(torch.as_tensor(real, dtype=torch.float64), real=True)
    metric.update(torch.as_tensor(fake, dtype=torch.float64), real=False)
    with torch.random.fork_rng(devices=[]):  # its subsets come from the global generator
        torch.manual_seed(seed)
        mean, _ = metric.compute()
    return float(mean)


@register_evaluator("kid")
class KID(Evaluator):
    """KID of each augmented class's synthetic samples against real samples of that class.

    Metrics: `kid/tail` (mean over the augmented classes), `kid/pooled` (all augmented classes
    together, each at its equal n), with `@init` and `@source` for the reference sets, as FID.
    Per-class values go to `<out_dir>/kid.json`. KID can be slightly negative when the two sets
    are alike (an unbiased estimate of a quantity that is 0).
    """

    applies_to = ("image",)
    metrics = (
        Metric("kid/tail", "KID tail", False, headline=True, rank=30),
        Metric("kid/pooled", "KID pooled", False),
    )
    higher_is_better = directions(metrics, ("", INIT, SOURCE))

    def __init__(self, reference: str = "test", max_subset: int = 1000):
        if reference not in REFERENCES:
            raise BenchError(f"kid: reference {reference!r} is not one of {REFERENCES}; set kid.reference")
        if not is_int(max_subset) or max_subset < 2:
            raise BenchError(f"kid.max_subset must be an integer >= 2, got {max_subset!r}")
        self.reference, self.max_subset = reference, max_subset

    def evaluate(self, cell) -> dict[str, float]:
        """KID metrics for the trained model's samples and the reference sets present."""
        return per_class_distance(
            cell, self.reference, "kid", lambda a, b: kid(a, b, seed=cell.seed, max_subset=self.max_subset)
        )
