"""The contract of a performance case: what `bench bench` runs and what it writes.

A case is a function `measure(scale, workdir) -> Measurement`. `scale` is "full" (the sizes the
issue's targets are stated for) or "smoke" (tiny sizes, seconds on a laptop, used by the tests to
exercise the same code). `workdir` is a scratch folder the case may fill (results of bench runs,
figures). A Measurement carries the suite's JSON keys, the details that explain them (settings,
per-run times, a profile where a target is missed) and any files it wrote (figures).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SCALES = ("full", "smoke")


@dataclass
class Measurement:
    """A case's result: `keys` go to the top level of the suite's JSON, `details` under its name."""

    keys: dict
    details: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


Case = Callable[[str, Path], Measurement]


def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of one call, by the monotonic high-resolution clock."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def median(values: list[float]) -> float:
    """The median, robust to the outliers of a noisy shared machine."""
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def python_command() -> list[str]:
    """This interpreter for a child process, without the working folder on sys.path (`-P`,
    Python 3.11+): run from a checkout, `-m bench...` would import the source tree instead of
    the installed package."""
    return [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]
