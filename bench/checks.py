"""Type checks for user settings, shared so every plugin means the same by "an integer"."""

from __future__ import annotations

import math
import numbers


def is_int(value) -> bool:
    """An integer setting; bool is excluded although Python counts it as one."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A finite real setting (NaN would pass every range comparison's negation)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
