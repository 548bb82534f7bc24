"""Evaluator plugin interface: read a finished cell, return named metrics."""

from __future__ import annotations

# The metrics that headline a comparison, in this order, where a dataset's records have them: the
# run summary's columns (bench/report/summary.py) and each cell's progress line (its first one)
HEADLINE_COLUMNS = ("fid/tail", "fid/pooled", "kid/tail", "irs_adjusted/tail", "swd/tail", "swd/all",
                    "coverage/tail", "cond_acc/tail", "bacc", "macro_f1", "bacc_gain")


class Evaluator:
    """Base class for evaluators.

    `evaluate(cell)` receives a `bench.cell.CellContext` (dataset, real splits, synthetic set,
    output folder) and returns a flat dict of float metrics. `higher_is_better` maps every
    metric name the evaluator can return to its direction, so tables can mark the best entry.
    `applies_to` says which dataset kinds it handles ("vector", "image"); the runner skips it
    elsewhere.
    """

    name = "evaluator"
    applies_to: tuple[str, ...] = ("vector", "image")
    higher_is_better: dict[str, bool] = {}

    def evaluate(self, cell) -> dict[str, float]:
        """Metrics for one cell."""
        raise NotImplementedError
