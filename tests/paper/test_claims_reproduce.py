"""docs/claims.md and docs/field.md are regenerated from the committed records, exactly.

The claims and field experiments' record.json and grid.json files are committed (no weights,
samples or caches), so anyone can rerun `bench claims results/claims --out X` or `bench field
results/field --out X` on a fresh clone and get the document that is in the repository, apart
from the line that states the date and the command; this test is that check.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("report", ["claims", "field"])
def test_the_report_on_the_committed_records_reproduces_its_document(report, tmp_path, monkeypatch):
    if not (ROOT / "results" / report).is_dir() or not (ROOT / "docs" / f"{report}.md").is_file():
        pytest.skip(f"the {report} experiment's records are not in this checkout")
    monkeypatch.chdir(ROOT)  # the document names the folder as given: results/<report>
    out = tmp_path / f"{report}.md"
    assert main([report, f"results/{report}", "--out", str(out)]) == 0
    written = out.read_text().splitlines()
    committed = (ROOT / "docs" / f"{report}.md").read_text().splitlines()
    assert len(written) == len(committed)
    differ = [
        i + 1
        for i, (a, b) in enumerate(zip(written, committed))
        if a != b and not (a.startswith("Generated on ") and b.startswith("Generated on "))
    ]
    assert not differ, f"{len(differ)} line(s) differ, first: line {differ[0]}"
