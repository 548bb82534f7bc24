"""docs/claims.md is regenerated from the committed records of results/claims, exactly.

The claims experiment's record.json and grid.json files are committed (no weights, samples or
caches), so anyone can rerun `bench claims results/claims --out X` on a fresh clone and get the
document that is in the repository, apart from the line that states the date and the command;
this test is that check.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_claims_on_the_committed_records_reproduces_docs_claims_md(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the document names the folder as given: results/claims
    out = tmp_path / "claims.md"
    assert main(["claims", "results/claims", "--out", str(out)]) == 0
    written, committed = out.read_text().splitlines(), (ROOT / "docs" / "claims.md").read_text().splitlines()
    assert len(written) == len(committed)
    differ = [
        (i + 1, a, b)
        for i, (a, b) in enumerate(zip(written, committed))
        if a != b and not (a.startswith("Generated on ") and b.startswith("Generated on "))
    ]
    assert not differ, f"{len(differ)} line(s) differ, first: line {differ[0][0]}"
