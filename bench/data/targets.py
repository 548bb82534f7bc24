"""Class-balancing augmentation targets: which classes get synthetic images, and how many.

The paper groups classes by their training frequency relative to the dominant class into ULT
(ultra-long-tail), LT, MT (mid-tail) and Head, and augments only ULT/LT/MT; Head classes and
"No Finding" are left as they are. Its thresholds and targets are lost; bench's defaults
(NOTES section 3), with q_c = n_c / n_ref:

    ULT  q < 0.01  ->  top up to 0.05 n_ref
    LT   q < 0.05  ->  top up to 0.10 n_ref
    MT   q < 0.20  ->  add 50 % of n_c
    Head otherwise ->  nothing

n_ref is the largest *finding* class by default (`reference='largest_finding'`): when "No Finding"
is itself the largest class (NIH-LT, MIMIC-LT) measuring against it would put nearly every
finding in ULT. `reference='largest'` measures against the largest class of all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from bench.config.data import AugmentationTargets
from bench.errors import BenchError


@dataclass(frozen=True)
class ClassTarget:
    """One class's count, frequency ratio, group and number of synthetic images."""

    name: str
    count: int
    ratio: float
    group: str  # "ULT", "LT", "MT", "Head" or "untouched"
    synthetic: int


def augmentation_plan(
    targets: AugmentationTargets, counts: Sequence[int], class_names: Sequence[str]
) -> list[ClassTarget]:
    """The group and synthetic count of every class, from its training count."""
    n_ref = _reference(targets, counts, class_names)
    return [_one(targets, name, int(n), n_ref) for name, n in zip(class_names, counts)]


def _reference(targets: AugmentationTargets, counts, class_names) -> int:
    pool = [
        n
        for n, name in zip(counts, class_names)
        if targets.reference == "largest" or name not in targets.untouched
    ]
    if not pool or max(pool) <= 0:
        raise BenchError("augmentation targets need at least one class with training samples")
    return int(max(pool))


def _one(t: AugmentationTargets, name: str, n: int, n_ref: int) -> ClassTarget:
    q = n / n_ref
    if name in t.untouched:
        return ClassTarget(name, n, q, "untouched", 0)
    if q < t.ult_below:
        return ClassTarget(name, n, q, "ULT", max(0, math.ceil(t.ult_to * n_ref) - n))
    if q < t.lt_below:
        return ClassTarget(name, n, q, "LT", max(0, math.ceil(t.lt_to * n_ref) - n))
    if q < t.mt_below:
        return ClassTarget(name, n, q, "MT", math.ceil(t.mt_extra * n))
    return ClassTarget(name, n, q, "Head", 0)


def plan_records(plan: list[ClassTarget]) -> list[dict]:
    """JSON-able rows of a plan (for records and `bench data stats`)."""
    return [asdict(t) for t in plan]
