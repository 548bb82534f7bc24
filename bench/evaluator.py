"""Evaluator plugin interface: read a finished cell, return named metrics."""

from __future__ import annotations

# The metrics that headline a comparison, in this order, where a dataset's records have them: the
# run summary's columns (bench/report/summary.py) and each cell's progress line (its first one)
HEADLINE_COLUMNS = ("fid/tail", "fid/pooled", "kid/tail", "irs_adjusted/tail", "swd/tail", "swd/all",
                    "coverage/tail", "cond_acc/tail", "bacc", "macro_f1", "bacc_gain")


class Evaluator:
    """Base class for evaluators.

    `evaluate(cell)` receives a `bench.context.CellContext` (dataset, real splits, synthetic set,
    output folder) and returns a flat dict of float metrics. `higher_is_better` maps every
    metric name the evaluator can return to its direction, so tables can mark the best entry.
    `applies_to` says which dataset kinds it handles ("vector", "image"); the runner skips it
    elsewhere. `version` says what its records hold: raise it when the evaluator computes something
    new or different, and every stored record it wrote is evaluated again on the next run (the
    trained backbone and the samples are reused). `spreads_over_ranks`: on a cell launched on
    several processes, `evaluate` runs on every rank and shares its work among them through
    bench.runtime.distributed (the downstream classifiers); the others run on rank 0 alone.
    """

    name = "evaluator"
    applies_to: tuple[str, ...] = ("vector", "image")
    higher_is_better: dict[str, bool] = {}
    spreads_over_ranks = False
    version = 1
    # False: evaluate() reads only the data, the latents and the prior, never the synthetic sets, so
    # it also runs on a cell stopped after its offline stage (`pipeline.stop_after = 'prior'`)
    reads_samples = True

    def evaluate(self, cell) -> dict[str, float]:
        """Metrics for one cell."""
        raise NotImplementedError
