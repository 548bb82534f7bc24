"""The experiment's index page: `index.html` (self-contained, opens offline) and `index.md` (GitHub).

Both list, in this order: the experiment name, when the page was written and the grid (datasets x
methods x seeds, how many cells are usable, missing or refused, and the note of every cell that
is not usable), then each table with links to its files, then each figure with its caption.
Every link is relative to the folder of the index, so the folder can be moved or published whole.
"""

from __future__ import annotations

import html
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from bench.report.collect import MISSING, OK, REFUSED, Experiment
from bench.report.figures import Figure
from bench.store.artifacts import write_text_atomic

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td.bad { color: #a00; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption, .files, .meta { color: #555; font-size: 0.95em; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


@dataclass
class TableEntry:
    """A rendered table: its title, an HTML fragment, and its files (format -> path relative to the index
    folder). `markdown`, when given, replaces the HTML fragment in index.md."""

    title: str
    html: str
    files: dict = field(default_factory=dict)
    markdown: str | None = None


def write_index(
    exp: Experiment, out_dir: Path, tables: list, figures: list[Figure], date: str | None = None
) -> Path:
    """Write out_dir/index.html and out_dir/index.md; returns the path of index.html.

    Figure paths are taken as they are (absolute, or relative to the working directory) and linked
    relative to out_dir; table files are already relative to out_dir.
    """
    out_dir = Path(out_dir)
    date = date or time.strftime("%Y-%m-%d %H:%M")
    figure_links = [relative_link(f.path, out_dir) for f in figures]
    write_text_atomic(out_dir / "index.md", index_markdown(exp, tables, figures, figure_links, date))
    page = index_html(exp, tables, figures, figure_links, date)
    # character references keep the page ASCII, so it reads the same whatever the writer's locale
    write_text_atomic(out_dir / "index.html", page.encode("ascii", "xmlcharrefreplace").decode("ascii"))
    return out_dir / "index.html"


def relative_link(path: Path, out_dir: Path) -> str:
    """A URL path from out_dir to `path` (POSIX separators, percent-encoded).

    Symbolic links are kept, not resolved: a results folder that is a link to another disk is
    linked through its name in the repository, which is where a reader finds it."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))
    return quote(Path(rel).as_posix(), safe="/")


def file_link(path) -> str:
    """A URL path for a table file given relative to the index folder."""
    return quote(Path(path).as_posix(), safe="/")


# --- the grid ----------------------------------------------------------------------------------


def status_counts(exp: Experiment) -> dict[str, int]:
    """How many grid cells are ok, missing and refused."""
    cells = exp.results()
    return {s: sum(c.status == s for c in cells) for s in (OK, MISSING, REFUSED)}


def grid_summary(exp: Experiment) -> str:
    """One sentence: the axes and the cell counts (plain text)."""
    counts = status_counts(exp)
    total = sum(counts.values())
    source = "" if exp.has_grid else " (no grid.json: axes from the records found)"
    return (
        f"{len(exp.datasets)} dataset(s) x {len(exp.methods)} method(s) x {len(exp.seeds)} seed(s) = "
        f"{total} cell(s){source}: {counts[OK]} ok, {counts[MISSING]} missing, {counts[REFUSED]} refused."
    )


def grid_cell(exp: Experiment, dataset: str, method: str) -> tuple[str, bool]:
    """("<ok>/<declared> ok", whether all are ok) for one dataset and method ("" when none declared)."""
    cells = exp.results(dataset, method)
    ok = sum(c.status == OK for c in cells)
    return (f"{ok}/{len(cells)} ok" if cells else "", ok == len(cells))


def grid_rows(exp: Experiment) -> list[tuple[str, list[tuple[str, bool]]]]:
    """The grid table, for both index formats: (dataset, [(status text, all ok) per method])."""
    return [(d, [grid_cell(exp, d, m) for m in exp.methods]) for d in exp.datasets]


def problem_rows(exp: Experiment) -> list[tuple[str, str, str]]:
    """(cell label, status, note) of every cell without a usable record, for both formats."""
    return [(c.label, c.status, c.note) for c in exp.problems()]


def _axes_text(exp: Experiment) -> list[tuple[str, str]]:
    """(axis name, its values) in config order."""
    return [
        ("datasets", ", ".join(exp.datasets)),
        ("methods", ", ".join(exp.methods)),
        ("seeds", ", ".join(str(s) for s in exp.seeds)),
    ]


# --- HTML --------------------------------------------------------------------------------------


def index_html(
    exp: Experiment, tables: list, figures: list[Figure], figure_links: list[str], date: str
) -> str:
    """The whole index.html (inline style, no scripts, no external resources)."""
    e = html.escape
    title = f"bench report: {exp.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">Written {e(date)} from <code>{e(str(exp.folder))}</code>.</p>',
        *_html_grid(exp),
        "<h2>Tables</h2>",
    ]
    parts += [_html_table(i, t) for i, t in enumerate(tables, 1)] or ["<p>No tables.</p>"]
    parts.append("<h2>Figures</h2>")
    parts += [_html_figure(i, f, link) for i, (f, link) in enumerate(zip(figures, figure_links), 1)] or [
        "<p>No figures: the records hold nothing to draw.</p>"
    ]
    return "\n".join(parts + ["</body>", "</html>", ""])


def _html_grid(exp: Experiment) -> list[str]:
    """The grid section: axes, counts, a dataset x method status table and the non-ok cells."""
    e = html.escape
    out = [
        "<h2>Grid</h2>",
        "<ul>",
        *[f"<li>{name}: {e(values)}</li>" for name, values in _axes_text(exp)],
        "</ul>",
        f"<p>{e(grid_summary(exp))}</p>",
    ]
    out += ["<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in ["dataset", *exp.methods]) + "</tr>"]
    for d, cells in grid_rows(exp):
        out.append(
            f"<tr><th>{e(d)}</th>"
            + "".join(
                f"<td>{e(text)}</td>" if ok else f'<td class="bad">{e(text)}</td>' for text, ok in cells
            )
            + "</tr>"
        )
    out.append("</table>")
    problems = problem_rows(exp)
    if problems:
        out += ["<h3>Cells without a usable record</h3>", "<ul>"]
        out += [
            f"<li><code>{e(label)}</code> ({e(status)}): {e(note)}</li>" for label, status, note in problems
        ]
        out.append("</ul>")
    return out


def _html_table(i: int, table) -> str:
    """One table: title, the caller's HTML fragment (inserted as is) and links to its files."""
    e = html.escape
    links = ", ".join(f'<a href="{e(file_link(p))}">{e(fmt)}</a>' for fmt, p in table.files.items())
    files = f'\n<p class="files">Files: {links}</p>' if links else ""
    return f'<section id="table-{i}">\n<h3>{e(table.title)}</h3>\n{table.html}{files}\n</section>'


def _html_figure(i: int, fig: Figure, link: str) -> str:
    """One figure: title, image and caption."""
    e = html.escape
    return (
        f'<figure id="figure-{i}">\n<h3>{e(fig.title)}</h3>\n'
        f'<a href="{e(link)}"><img src="{e(link)}" alt="{e(fig.title)}"></a>\n'
        f"<figcaption>{e(fig.caption)}</figcaption>\n</figure>"
    )


# --- Markdown ----------------------------------------------------------------------------------

_MD_SPECIAL = "\\`*_[]<>|#"


def md_text(text: str) -> str:
    """Text with Markdown's special characters backslash-escaped, on one line."""
    text = " ".join(str(text).split())
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in text)


def index_markdown(
    exp: Experiment, tables: list, figures: list[Figure], figure_links: list[str], date: str
) -> str:
    """The whole index.md, with the same sections as index.html."""
    m = md_text
    parts = [
        f"# bench report: {m(exp.name)}",
        "",
        f"Written {m(date)} from {m(str(exp.folder))}.",
        "",
        *_md_grid(exp),
        "## Tables",
        "",
    ]
    for table in tables:
        parts += [
            f"### {m(table.title)}",
            "",
            table.markdown if table.markdown is not None else table.html,
            "",
        ]
        if table.files:
            parts += [
                "Files: " + ", ".join(f"[{m(fmt)}]({file_link(p)})" for fmt, p in table.files.items()),
                "",
            ]
    if not tables:
        parts += ["No tables.", ""]
    parts += ["## Figures", ""]
    for fig, link in zip(figures, figure_links):
        parts += [f"### {m(fig.title)}", "", f"![{m(fig.title)}]({link})", "", m(fig.caption), ""]
    if not figures:
        parts += ["No figures: the records hold nothing to draw.", ""]
    return "\n".join(parts)


def _md_grid(exp: Experiment) -> list[str]:
    """The grid section in Markdown: axes, counts, the status table and the non-ok cells."""
    m = md_text
    out = [
        "## Grid",
        "",
        *[f"- {name}: {m(values)}" for name, values in _axes_text(exp)],
        "",
        m(grid_summary(exp)),
        "",
    ]
    header = ["dataset", *exp.methods]
    out += ["| " + " | ".join(m(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += [
        "| " + " | ".join([m(d)] + [m(text) for text, _ok in cells]) + " |" for d, cells in grid_rows(exp)
    ]
    out.append("")
    problems = problem_rows(exp)
    if problems:
        out += ["### Cells without a usable record", ""]
        out += [f"- `{label}` ({status}): {m(note)}" for label, status, note in problems]
        out.append("")
    return out
