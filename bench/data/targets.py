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
from dataclasses import asdict, dataclass
from typing import Sequence

import gin

from bench.errors import BenchError

REFERENCES = ("largest_finding", "largest")


@dataclass(frozen=True)
class ClassTarget:
    """One class's count, frequency ratio, group and number of synthetic images."""

    name: str
    count: int
    ratio: float
    group: str  # "ULT", "LT", "MT", "Head" or "untouched"
    synthetic: int


@gin.configurable("targets")
@dataclass(frozen=True)
class AugmentationTargets:
    """Thresholds and targets of the ULT / LT / MT / Head grouping (gin scope `targets`)."""

    ult_below: float = 0.01
    ult_to: float = 0.05
    lt_below: float = 0.05
    lt_to: float = 0.10
    mt_below: float = 0.20
    mt_extra: float = 0.5
    reference: str = "largest_finding"
    untouched: Sequence[str] = ("No Finding",)

    def __post_init__(self):
        if self.reference not in REFERENCES:
            raise BenchError(f"targets.reference={self.reference!r} is not one of {list(REFERENCES)}")
        if not 0 < self.ult_below <= self.lt_below <= self.mt_below:
            raise BenchError("targets thresholds must satisfy 0 < ult_below <= lt_below <= mt_below "
                             f"(got {self.ult_below}, {self.lt_below}, {self.mt_below})")
        if min(self.ult_to, self.lt_to, self.mt_extra) < 0:
            raise BenchError("targets.ult_to, lt_to and mt_extra must be >= 0")

    def plan(self, counts: Sequence[int], class_names: Sequence[str]) -> list[ClassTarget]:
        """The group and synthetic count of every class, from its training count."""
        n_ref = self._reference(counts, class_names)
        return [self._one(name, int(n), n_ref) for name, n in zip(class_names, counts)]

    def _reference(self, counts, class_names) -> int:
        pool = [n for n, name in zip(counts, class_names)
                if self.reference == "largest" or name not in self.untouched]
        if not pool or max(pool) <= 0:
            raise BenchError("augmentation targets need at least one class with training samples")
        return int(max(pool))

    def _one(self, name: str, n: int, n_ref: int) -> ClassTarget:
        q = n / n_ref
        if name in self.untouched:
            return ClassTarget(name, n, q, "untouched", 0)
        if q < self.ult_below:
            return ClassTarget(name, n, q, "ULT", max(0, math.ceil(self.ult_to * n_ref) - n))
        if q < self.lt_below:
            return ClassTarget(name, n, q, "LT", max(0, math.ceil(self.lt_to * n_ref) - n))
        if q < self.mt_below:
            return ClassTarget(name, n, q, "MT", math.ceil(self.mt_extra * n))
        return ClassTarget(name, n, q, "Head", 0)


def plan_records(plan: list[ClassTarget]) -> list[dict]:
    """JSON-able rows of a plan (for records and `bench data stats`)."""
    return [asdict(t) for t in plan]
