"""The generative-metrics sample set: a larger synthetic set that only FID and IRS score.

The paper computes its generative metrics on 50,000 synthetic samples against the training
split, while the augmentation (downstream) set is only the class-balancing targets (5-9k
images). `generative.n_total` asks for such a separate set: the runner samples it as its own
stage (`<cell>/samples_generative/`) and FID / IRS score it instead of the synthetic set. None
(the default) keeps today's behaviour: FID / IRS score the synthetic set.

The total is spread over the evaluated classes, the ones FID / IRS report on (the augmented ULT /
LT / MT classes; every class when the plan augments none), by `generative.allocation`:

- 'targets' (default): proportional to the augmentation targets, so the metrics describe the
  same class mix as the augmentation set, only with more samples per class;
- 'uniform': the same number for every evaluated class;
- 'train': proportional to the classes' training counts (the real side of a train-referenced
  FID at equal n).

Counts are whole numbers summing exactly to `n_total` (largest-remainder rounding, ties to the
lower class index). The set uses the sampler's per-sample noise seeds, so its first n_c samples
of class c are the synthetic set's samples of class c when both use the same sampler settings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from bench.config.evaluation import GenerativeSet
from bench.errors import BenchError

log = logging.getLogger(__name__)


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Non-negative integers proportional to `weights` that sum exactly to `total`.

    Each share gets the floor of its quota total * w / sum(w); the units left over go to the
    largest fractional remainders (Hamilton's method), ties to the lower index.
    """
    w = np.asarray(weights, dtype=np.float64)
    if total < 0 or w.ndim != 1 or len(w) == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(
            f"largest_remainder needs total >= 0 and non-negative weights with a "
            f"positive sum, got total={total}, weights={list(weights)}"
        )
    quota = total * w / w.sum()
    counts = np.floor(quota).astype(np.int64)
    left = total - int(counts.sum())
    order = np.argsort(-(quota - counts), kind="stable")  # largest remainder first
    counts[order[:left]] += 1
    return counts.tolist()


def per_class(config: GenerativeSet, plan: Sequence) -> list[int] | None:
    """Samples per class (all classes, 0 for the others) of the generative set `config` asks for,
    from the augmentation plan; None when the cell has no such set.

    `plan` holds a bench.data.targets.ClassTarget per class (its training `count` and `synthetic`
    target).
    """
    if not config.enabled:
        return None
    classes = [c for c, t in enumerate(plan) if t.synthetic > 0]
    allocation = config.allocation
    if not classes:
        classes = list(range(len(plan)))
        if allocation == "targets":
            log.info("generative: the plan augments no class; n_total spread uniformly over all classes")
            allocation = "uniform"
    weights = {
        "targets": [plan[c].synthetic for c in classes],
        "uniform": [1.0] * len(classes),
        "train": [plan[c].count for c in classes],
    }[allocation]
    if sum(weights) <= 0:
        raise BenchError(
            f"generative.allocation={allocation!r}: the evaluated classes have no "
            "training samples; use generative.allocation='uniform'"
        )
    counts = [0] * len(plan)
    for c, n in zip(classes, largest_remainder(config.n_total, weights)):
        counts[c] = n
    return counts
