"""The tables `bench tables` and `bench report` write: the generic report's tables, the paper's
ablation among them, significance marked against the paper's baseline method.

The generic report (bench.report.tables) knows no method by name; the paper's choices are here:
`BASELINE`, the method `†` marks are tested against when the caller names none (`--baseline`),
and `PAPER_TABLES`, the tables it adds to the generic ones.
"""

from __future__ import annotations

from bench.metrics.significance import DEFAULT_TEST
from bench.paper.ablation import ablation_table
from bench.report.collect import Experiment
from bench.report.tables import TableOptions, build_tables
from bench.report.tabular import Table

BASELINE = "fm"  # vanilla flow matching: the reference of every `†` mark
PAPER_TABLES = (ablation_table,)


def paper_options(test: str = DEFAULT_TEST, alpha: float = 0.05, baseline: str | None = None) -> TableOptions:
    """Significance settings of the paper's tables: `baseline` defaults to `BASELINE`."""
    return TableOptions(test, alpha, baseline or BASELINE)


def paper_tables(exp: Experiment, options: TableOptions | None = None) -> list[Table]:
    """Every table the records support: the generic ones and the paper's own (default: `paper_options`)."""
    return build_tables(exp, options or paper_options(), extra=PAPER_TABLES)
