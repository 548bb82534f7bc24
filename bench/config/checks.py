"""Type checks for user settings, shared so every plugin means the same by "an integer"."""

from __future__ import annotations

import math
import numbers
from typing import Iterable

from bench.errors import BenchError


def is_int(value) -> bool:
    """An integer setting; bool is excluded although Python counts it as one."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A finite real setting (NaN would pass every range comparison's negation)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def require(checks: Iterable[tuple[bool, str]]) -> None:
    """Raise BenchError with the message of the first (condition, message) pair that is false."""
    for ok, message in checks:
        if not ok:
            raise BenchError(message)
