"""Laps of a monotonic clock: where the seconds of a multi-part computation went."""

from __future__ import annotations

import time


class Stopwatch:
    """`lap(name)` adds the seconds since the previous lap (or the start) to `laps[name]`."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> float:
        """Close the current lap under `name`; returns its seconds."""
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        self.laps[name] = round(self.laps.get(name, 0.0) + seconds, 4)
        return seconds
