"""Render a `bench.report.tabular.Table` as LaTeX (booktabs), Markdown (tabulate), CSV (tidy) or HTML.

LaTeX uses only standard packages (booktabs, amssymb for the check mark) and compiles with plain
pdflatex; `latex_document` wraps tables in a complete document. Markdown is GitHub-flavoured and
readable in a terminal. CSV is tidy (one line per entry, numbers unformatted) for spreadsheets.
"""

from __future__ import annotations

import csv
import html
import io
import re
from pathlib import Path

from tabulate import tabulate

from bench.report.tabular import MISSING, Entry, Table
from bench.store.artifacts import write_text_atomic

FORMATS = {"latex": "tex", "md": "md", "csv": "csv", "html": "html"}
DASH = "–"
# Unicode the tables use, as LaTeX (everything else non-ASCII becomes '?')
_LATEX_SYMBOLS = {
    "–": "--",
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "†": r"$^{\dagger}$",
    "‡": r"$^{\ddagger}$",
    "§": r"\S{}",
    "✓": r"\checkmark{}",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "*": r"$^{*}$",
}
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def render(table: Table, fmt: str) -> str:
    """The table in one of FORMATS."""
    return {"latex": to_latex, "md": to_markdown, "csv": to_csv, "html": to_html}[fmt](table)


def _arrow(higher) -> str:
    return "" if higher is None else (" ↑" if higher else " ↓")


def _header_titles(table: Table, with_group: bool) -> list[str]:
    out = []
    for col in table.columns:
        title = col.title + _arrow(col.higher_is_better) + (f" ({col.subtitle})" if col.subtitle else "")
        out.append(f"{col.group}: {title}" if with_group and col.group else title)
    return out


def entry_text(entry: Entry) -> str:
    """Plain text of an entry: number or text, then marks; '–' missing, 'n/a' not applicable."""
    if entry.state == MISSING:
        return DASH
    if entry.state:
        return entry.state
    return (entry.text if entry.text is not None else entry.number() or DASH) + entry.marks


# ---- Markdown -------------------------------------------------------------------------------


def to_markdown(table: Table) -> str:
    """A '### title' block: caption, the GitHub table (bold best), and the notes as a list."""
    rows = [labels + [_md_entry(e) for e in entries] for labels, entries in table.rows]
    body = tabulate(
        rows, headers=table.row_header + _header_titles(table, True), tablefmt="github", disable_numparse=True
    )
    notes = "".join(f"\n- {n}" for n in table.notes)
    return f"### {table.title}\n\n{table.caption}\n\n{body}\n{notes}\n".replace("\n\n\n", "\n\n")


def _md_entry(entry: Entry) -> str:
    """Bold number, then the marks (a literal '*' escaped so Markdown does not read emphasis)."""
    text = entry_text(entry)
    number, marks = text[: len(text) - len(entry.marks)], entry.marks.replace("*", "\\*")
    return (f"**{number}**" if entry.best else number) + marks


# ---- LaTeX ----------------------------------------------------------------------------------

# Text that is mathematics, typeset in math mode instead of escaped: the standard Gaussian, powers
# (`2^n`, `sigma^2`) and a minus sign before a number (a hyphen there would print too short)
_MATH = [
    (re.compile(r"N\(0, ?I\)"), lambda m: r"$\mathcal{N}(0, I)$"),
    (re.compile(r"(?<![\w$])([A-Za-z]+|\d+)\^([A-Za-z0-9]+)"), lambda m: f"${_greek(m[1])}^{{{m[2]}}}$"),
    (re.compile(r"(?<![\w.$-])-(?=\d)"), lambda m: "$-$"),
]
WIDE_COLUMNS = 8  # a tabular with more value columns than this is scaled to the text width
TALL_ROWS = 40  # one with more rows than this is scaled to 85 % of the text height (it fits one page)
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "lambda", "mu", "pi", "rho", "sigma", "tau"}


def _greek(name: str) -> str:
    return f"\\{name}" if name in _GREEK else name


def latex_escape(text: str) -> str:
    """Escape LaTeX specials, map the tables' Unicode symbols to LaTeX and set mathematics
    (`_MATH`) in math mode."""
    text, out, pos = str(text), [], 0
    for start, end, math in _math_spans(text):
        out.append(_escape_plain(text[pos:start]) + math)
        pos = end
    return "".join(out) + _escape_plain(text[pos:])


def _math_spans(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, LaTeX) of the mathematics in `text`, left to right."""
    spans = sorted((m.start(), m.end(), make(m)) for pattern, make in _MATH for m in pattern.finditer(text))
    kept, last = [], -1
    for start, end, math in spans:
        if start >= last:
            kept.append((start, end, math))
            last = end
    return kept


def _escape_plain(text: str) -> str:
    out = []
    for ch in text:
        if ch in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[ch])
        elif ch in _LATEX_SYMBOLS:
            out.append(_LATEX_SYMBOLS[ch])
        elif ord(ch) > 127:
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


def to_latex(table: Table) -> str:
    """A booktabs `table` float with caption, label, grouped header and notes under the tabular."""
    n_labels = len(table.row_header)
    spec = "l" * n_labels + "c" * len(table.columns)
    # scaled (graphicx) so that it never runs off the page: a tall table to the text height, a wide
    # one to the text width
    scale = (
        r"\resizebox{!}{0.85\textheight}{%"
        if len(table.rows) > TALL_ROWS
        else r"\resizebox{\linewidth}{!}{%"
        if len(table.columns) > WIDE_COLUMNS
        else None
    )
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(table.title)}. {latex_escape(table.caption)}}}",
        rf"\label{{tab:{_label(table.name)}}}",
        *([scale] if scale else []),
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    groups = table.groups()
    if any(g for g, _ in groups):
        cells, rules, col = [""] * n_labels, [], n_labels + 1
        for group, span in groups:
            cells.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(group)}}}" if group else "")
            if group:
                rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
            col += span
        lines += [" & ".join(cells) + r" \\", " ".join(rules)]
    lines.append(
        " & ".join(latex_escape(h) for h in table.row_header + _header_titles(table, False)) + r" \\"
    )
    lines.append(r"\midrule")
    for labels, entries in table.rows:
        lines.append(
            " & ".join([latex_escape(x) for x in labels] + [_latex_entry(e) for e in entries]) + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}" + ("}" if scale else "")]
    if table.notes:
        lines.append(
            r"\par\smallskip\parbox{\linewidth}{\footnotesize "
            + r" \\ ".join(latex_escape(n) for n in table.notes)
            + "}"
        )
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _latex_entry(entry: Entry) -> str:
    text = latex_escape(entry_text(entry))
    if entry.best and entry.marks:
        marks = latex_escape(entry.marks)
        return rf"\textbf{{{text[: len(text) - len(marks)]}}}{marks}"
    return rf"\textbf{{{text}}}" if entry.best else text


def _label(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9:-]", "-", name)


def latex_document(tables: list[Table], title: str) -> str:
    """A complete pdflatex document with every table (standard packages only)."""
    body = "\n".join(to_latex(t) for t in tables)
    return "\n".join(
        [
            r"\documentclass{article}",
            r"\usepackage[T1]{fontenc}",
            r"\usepackage{booktabs}",
            r"\usepackage{amssymb}",
            r"\usepackage{graphicx}",
            r"\usepackage[landscape,margin=1.5cm]{geometry}",
            r"\begin{document}",
            rf"\section*{{{latex_escape(title)}}}",
            body,
            r"\end{document}",
            "",
        ]
    )


# ---- CSV ------------------------------------------------------------------------------------

CSV_COLUMNS = ["table", "row", "group", "column", "mean", "std", "n_runs", "text", "state", "marks", "best"]


def csv_rows(table: Table) -> list[list]:
    """Tidy rows: one per entry (numbers unrounded), then one per note."""
    rows = []
    for labels, entries in table.rows:
        for col, e in zip(table.columns, entries):
            rows.append(
                [
                    table.name,
                    " / ".join(x for x in labels if x) or "-",
                    col.group,
                    col.title,
                    "" if e.mean is None or e.text is not None else repr(e.mean),
                    "" if e.std is None or e.text is not None else repr(e.std),
                    len(e.values) if e.text is None else "",
                    e.text or "",
                    e.state or "",
                    e.marks,
                    int(e.best),
                ]
            )
    rows += [[table.name, "", "", "note", "", "", "", n, "", "", 0] for n in table.notes]
    return rows


def to_csv(table: Table, header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(table))
    return buf.getvalue()


# ---- HTML -----------------------------------------------------------------------------------


def to_html(table: Table) -> str:
    """An HTML fragment: caption, table with a group header row, notes (for the index page)."""
    esc = html.escape
    head = ""
    groups = table.groups()
    if any(g for g, _ in groups):
        head = (
            "<tr>"
            + "".join("<th></th>" for _ in table.row_header)
            + "".join(f'<th colspan="{span}">{esc(g)}</th>' for g, span in groups)
            + "</tr>"
        )
    head += (
        "<tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in table.row_header + _header_titles(table, False))
        + "</tr>"
    )
    body = "".join(
        "<tr>"
        + "".join(f"<td>{esc(x)}</td>" for x in labels)
        + "".join(f"<td>{_html_entry(e)}</td>" for e in entries)
        + "</tr>"
        for labels, entries in table.rows
    )
    notes = "".join(f"<li>{esc(n)}</li>" for n in table.notes)
    return (
        f"<p>{esc(table.caption)}</p>\n<table>\n<thead>{head}</thead>\n<tbody>{body}</tbody>\n</table>\n"
        + (f'<ul class="notes">{notes}</ul>\n' if notes else "")
    )


def _html_entry(entry: Entry) -> str:
    text = html.escape(entry_text(entry))
    return f"<b>{text}</b>" if entry.best else text


# ---- files ----------------------------------------------------------------------------------


def combined(tables: list[Table], fmt: str, title: str) -> str:
    """All tables in one text: a LaTeX document, a Markdown page, one CSV, or HTML fragments."""
    if fmt == "latex":
        return latex_document(tables, title)
    if fmt == "csv":
        return "".join(to_csv(t, header=i == 0) for i, t in enumerate(tables))
    if fmt == "md":
        return f"# {title}\n\n" + "\n".join(to_markdown(t) for t in tables)
    return "\n".join(f"<h2>{html.escape(t.title)}</h2>\n{to_html(t)}" for t in tables)


def write_tables(tables: list[Table], fmt: str, out_dir, title: str) -> dict:
    """Write `<name>.<ext>` per table and `tables.<ext>` with all of them; returns name -> path.

    Every text is rendered before the first file is written, so a rendering error leaves no
    partial output; each file is written atomically.
    """
    ext = FORMATS[fmt]
    texts = {t.name: render(t, fmt) for t in tables}
    texts["tables"] = combined(tables, fmt, title)
    paths = {}
    for name, text in texts.items():
        paths[name] = Path(out_dir) / f"{name}.{ext}"
        write_text_atomic(paths[name], text)
    return paths
