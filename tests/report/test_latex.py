"""The LaTeX output, checked structurally (CI has no pdflatex): environments nest, braces balance,
every row has the tabular's column count, mathematics is in math mode, wide and tall tables are
scaled to the page."""

from __future__ import annotations

import re

import pytest
from records_fixture import make_experiment

from bench.paper.paper_tables import paper_tables
from bench.report.collect import load_experiment
from bench.report.render import latex_document, latex_escape, to_latex
from bench.report.tabular import Column, Entry, Table

UNESCAPED_AMP = re.compile(r"(?<!\\)&")


def environments_nest(tex: str) -> bool:
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{(\w+\*?)\}", tex):
        if kind == "begin":
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack


def braces_balance(tex: str) -> bool:
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def columns_of(spec: str) -> int:
    return len(re.findall(r"[lcr]", spec))


def row_widths(tex: str) -> list[tuple[int, int]]:
    """(columns of the tabular spec, columns of a row) for every row of every tabular."""
    out = []
    for spec, body in re.findall(r"\\begin\{tabular\}\{([^}]*)\}(.*?)\\end\{tabular\}", tex, re.S):
        for line in body.split("\\\\"):
            line = line.strip()
            if not line or line.startswith(("\\toprule", "\\midrule", "\\bottomrule", "\\cmidrule")):
                continue
            line = re.sub(r"^\\(midrule|cmidrule\S*)\s*", "", line)
            spans = sum(int(n) - 1 for n in re.findall(r"\\multicolumn\{(\d+)\}", line))
            out.append((columns_of(spec), len(UNESCAPED_AMP.findall(line)) + 1 + spans))
    return out


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> str:
    folder = make_experiment(
        tmp_path_factory.mktemp("latex"),
        datasets=("phantom_lt", "nih_lt"),
        methods=("fm", "cbfm", "optprior", "optprior_sub", "optprior_opt"),
    )
    return latex_document(paper_tables(load_experiment(folder)), "bench experiment exp")


def test_the_document_is_well_formed(document):
    assert environments_nest(document) and braces_balance(document)
    widths = row_widths(document)
    assert widths and all(spec == row for spec, row in widths), [w for w in widths if w[0] != w[1]][:3]
    assert "textasciicircum" not in document
    assert "\\usepackage{graphicx}" in document


def _table(n_columns: int, n_rows: int, value: float = -0.5, note: str = "") -> Table:
    table = Table(
        "t",
        "A table",
        "Caption with N(0, I).",
        ["method"],
        columns=[Column(f"c{i}", True) for i in range(n_columns)],
    )
    for r in range(n_rows):
        table.add_row([f"m{r}"], [Entry(runs={(0, 0): value}) for _ in range(n_columns)])
    if note:
        table.add_note(note)
    return table


def test_negatives_powers_and_the_standard_gaussian_are_typeset_as_mathematics():
    tex = to_latex(_table(2, 2, note="a sign-flip test cannot go below 2/2^n; sigma^2 I"))
    assert "$-$0.5" in tex and "-0.5" not in tex.replace("$-$0.5", "")
    assert r"$\mathcal{N}(0, I)$" in tex and "N(0, I)" not in tex.replace(r"\mathcal{N}(0, I)", "")
    assert "$2^{n}$" in tex and r"$\sigma^{2}$" in tex
    assert environments_nest(tex) and braces_balance(tex)
    assert latex_escape("seed-0, 1e-06, 2026-12-06, 50% & x_1") == r"seed-0, 1e-06, 2026-12-06, 50\% \& x\_1"


@pytest.mark.parametrize(
    "n_columns,n_rows,scaled",
    [(3, 5, None), (12, 5, r"\resizebox{\linewidth}{!}"), (3, 50, r"\resizebox{!}{0.85\textheight}")],
)
def test_wide_and_tall_tables_are_scaled_to_the_page(n_columns, n_rows, scaled):
    tex = to_latex(_table(n_columns, n_rows))
    assert ("resizebox" in tex) == (scaled is not None)
    if scaled:
        assert scaled in tex
    assert environments_nest(tex) and braces_balance(tex)
    assert all(spec == row for spec, row in row_widths(tex))
