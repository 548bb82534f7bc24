"""The `grid` settings: the axes an experiment declares (command-line axes replace them)."""

from __future__ import annotations

from collections.abc import Sequence

from bench.config.checks import Settings, settings


@settings("grid")
class GridConfig(Settings):
    """Grid axes an experiment declares; command-line axes replace them (checked there:
    bench.pipeline.assemble.expand_grid)."""

    methods: Sequence[str] = ("fm",)
    datasets: Sequence[str] = ("synthetic2d",)
    seeds: Sequence[int] = (0,)
