"""Run a whole grid: validate every cell first, then run them, isolating failures."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench.artifacts import write_json_atomic, write_text_atomic
from bench.cells import RunRequest, build_cell, validate
from bench.errors import BenchError
from bench.runner import run_cell
from bench.summary import summary_table

log = logging.getLogger(__name__)


@dataclass
class GridResult:
    """Records of the finished cells and messages of the failed ones."""

    records: list = field(default_factory=list)
    failures: dict = field(default_factory=dict)  # cell label -> one-line reason
    summary_path: Path | None = None


def run_grid(request: RunRequest) -> GridResult:
    """Validate the whole grid (nothing is written on bad input), then run cell by cell."""
    specs = [cell.spec for cell in validate(request)]
    result = GridResult()
    for i, spec in enumerate(specs, 1):
        log.info("[%d/%d] %s", i, len(specs), spec.label)
        try:
            result.records.append(run_cell(build_cell(spec, request), request.results_dir))
            (spec.folder(request.results_dir) / "failure.json").unlink(missing_ok=True)
        except BenchError:
            raise
        except Exception as exc:  # one failing cell must not stop the others
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            result.failures[spec.label] = reason
            log.error("%s failed: %s", spec.label, reason)
            write_json_atomic(spec.folder(request.results_dir) / "failure.json",
                              {"status": "failed", "reason": reason,
                               "traceback": traceback.format_exc()})
    if result.records:
        result.summary_path = Path(request.results_dir) / request.experiment / "summary.md"
        write_text_atomic(result.summary_path, summary_table(result.records) + "\n")
    return result
