"""The experiment's index page: `index.html` (self-contained, opens offline) and `index.md` (GitHub).

The page answers first: the experiment name, when the page was written, one line on the grid and
one on provenance; then the **headline** figure of each dataset (bench.report.headline), the
**sample grids** (real vs generated, one method per row), the **tables** (the long ones, every
metric of a dataset and the significance table, folded in `<details>`), the other figures, the
**grid** (datasets x methods x seeds, how many cells are usable, missing or refused, and the note
of every cell that is not usable) and the **provenance** the records state (commit, package
versions, device, config and stage hashes; per cell folded: bench.report.provenance).
Every link is relative to the folder of the index, so the folder can be moved or published whole.
The page fits a laptop's width: images scale down to the page (`max-width: 100%`) and a table
wider than the page scrolls inside its own box.
"""

from __future__ import annotations

import html
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from bench.report.collect import MISSING, OK, REFUSED, Experiment
from bench.report.figures import HEADLINE, SAMPLES, Figure
from bench.report.provenance import CELL_HEADER, cell_rows, short_summary, summary_items
from bench.store.artifacts import write_text_atomic

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td.bad { color: #a00; }
.wide { max-width: 100%; overflow-x: auto; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption, .files, .meta { color: #555; font-size: 0.95em; }
details { margin: 0.8em 0; }
summary { cursor: pointer; font-weight: 600; }
dl.provenance { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 0.2em 1em; }
dl.provenance dt { font-weight: 600; }
dl.provenance dd { margin: 0; overflow-wrap: anywhere; }
nav a { margin-right: 1em; }
code { background: #f5f5f5; padding: 0 0.2em; overflow-wrap: anywhere; }
"""
# tables shown folded (<details>): every metric of a dataset, and every paired comparison
FOLDED_PREFIXES = ("all_", "significance")
SECTIONS = (
    ("headline", "Headline"),
    ("samples", "Samples"),
    ("tables", "Tables"),
    ("figures", "More figures"),
    ("grid", "Grid"),
    ("provenance", "Provenance"),
)


def folded_table(name: str) -> bool:
    """Whether the page folds a table (a long reference table rather than one of the paper's)."""
    return name.startswith(FOLDED_PREFIXES)


@dataclass
class TableEntry:
    """A rendered table: its title, an HTML fragment, and its files (format -> path relative to the index
    folder). `markdown`, when given, replaces the HTML fragment in index.md."""

    title: str
    html: str
    files: dict = field(default_factory=dict)
    markdown: str | None = None
    folded: bool = False  # shown inside <details> (folded_table)


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


def _split(figures: list[Figure], links: list[str]) -> dict[str, list[tuple[Figure, str]]]:
    """The figures (with their links) of each page section, in the order given."""
    out: dict[str, list] = {HEADLINE: [], SAMPLES: [], "figures": []}
    for fig, link in zip(figures, links):
        out[fig.section if fig.section in out else "figures"].append((fig, link))
    return out


def index_html(
    exp: Experiment, tables: list, figures: list[Figure], figure_links: list[str], date: str
) -> str:
    """The whole index.html (inline style, no scripts, no external resources)."""
    e = html.escape
    title = f"bench report: {exp.name}"
    sections = _split(figures, figure_links)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">Written {e(date)} from <code>{e(str(exp.folder))}</code>. {e(grid_summary(exp))} '
        f"{e(short_summary(exp))}</p>",
        "<nav>" + "".join(f'<a href="#{key}">{e(name)}</a>' for key, name in SECTIONS) + "</nav>",
        '<h2 id="headline">Headline</h2>',
    ]
    parts += _html_figures(sections[HEADLINE], "No headline figure: the records hold no headline metric.")
    parts.append('<h2 id="samples">Samples</h2>')
    parts += _html_figures(
        sections[SAMPLES], "No sample grids: no cell wrote samples.png (the sample_grid evaluator)."
    )
    parts.append('<h2 id="tables">Tables</h2>')
    parts += [_html_table(i, t) for i, t in enumerate(tables, 1)] or ["<p>No tables.</p>"]
    parts.append('<h2 id="figures">More figures</h2>')
    parts += _html_figures(sections["figures"], "No figures: the records hold nothing more to draw.")
    parts += _html_grid(exp) + _html_provenance(exp)
    return "\n".join(parts + ["</body>", "</html>", ""])


def _html_figures(figures: list[tuple[Figure, str]], empty: str) -> list[str]:
    """The figures of one section, or a paragraph saying why it has none."""
    return [_html_figure(f, link) for f, link in figures] or [f"<p>{html.escape(empty)}</p>"]


def _html_provenance(exp: Experiment) -> list[str]:
    """What the records state about their origin: a compact list, then one row per cell, folded."""
    e = html.escape
    out = ['<h2 id="provenance">Provenance</h2>', '<dl class="provenance">']
    out += [f"<dt>{e(label)}</dt><dd>{e(text)}</dd>" for label, text in summary_items(exp)]
    out.append("</dl>")
    rows = cell_rows(exp)
    if rows:
        out += [
            f"<details><summary>Per cell ({len(rows)})</summary>",
            '<div class="wide"><table>',
            "<tr>" + "".join(f"<th>{e(h)}</th>" for h in CELL_HEADER) + "</tr>",
            *["<tr>" + "".join(f"<td><code>{e(v)}</code></td>" for v in row) + "</tr>" for row in rows],
            "</table></div>",
            "</details>",
        ]
    return out


def _html_grid(exp: Experiment) -> list[str]:
    """The grid section: axes, counts, a dataset x method status table and the non-ok cells."""
    e = html.escape
    out = [
        '<h2 id="grid">Grid</h2>',
        "<ul>",
        *[f"<li>{name}: {e(values)}</li>" for name, values in _axes_text(exp)],
        "</ul>",
        f"<p>{e(grid_summary(exp))}</p>",
    ]
    out += [
        '<div class="wide"><table>',
        "<tr>" + "".join(f"<th>{e(h)}</th>" for h in ["dataset", *exp.methods]) + "</tr>",
    ]
    for d, cells in grid_rows(exp):
        out.append(
            f"<tr><th>{e(d)}</th>"
            + "".join(
                f"<td>{e(text)}</td>" if ok else f'<td class="bad">{e(text)}</td>' for text, ok in cells
            )
            + "</tr>"
        )
    out.append("</table></div>")
    problems = problem_rows(exp)
    if problems:
        out += ["<h3>Cells without a usable record</h3>", "<ul>"]
        out += [
            f"<li><code>{e(label)}</code> ({e(status)}): {e(note)}</li>" for label, status, note in problems
        ]
        out.append("</ul>")
    return out


def _html_table(i: int, table) -> str:
    """One table: title, the caller's HTML fragment (inserted as is, scrolling inside its box when wider
    than the page) and links to its files; a folded table inside <details>, its title the summary."""
    e = html.escape
    links = ", ".join(f'<a href="{e(file_link(p))}">{e(fmt)}</a>' for fmt, p in table.files.items())
    files = f'\n<p class="files">Files: {links}</p>' if links else ""
    body = f'<div class="wide">\n{table.html}</div>{files}'
    if table.folded:
        return f'<details id="table-{i}">\n<summary>{e(table.title)}</summary>\n{body}\n</details>'
    return f'<section id="table-{i}">\n<h3>{e(table.title)}</h3>\n{body}\n</section>'


def _html_figure(fig: Figure, link: str) -> str:
    """One figure: title, image (scaled to the page, a link to the full size) and caption."""
    e = html.escape
    anchor = "figure-" + Path(link).stem
    return (
        f'<figure id="{e(anchor)}">\n<h3>{e(fig.title)}</h3>\n'
        f'<a href="{e(link)}"><img src="{e(link)}" alt="{e(fig.title)}" style="max-width: 100%"></a>\n'
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
    """The whole index.md, with the same sections as index.html (folded tables in <details>)."""
    m = md_text
    sections = _split(figures, figure_links)
    parts = [
        f"# bench report: {m(exp.name)}",
        "",
        f"Written {m(date)} from {m(str(exp.folder))}. {m(grid_summary(exp))} {m(short_summary(exp))}",
        "",
        "## Headline",
        "",
        *_md_figures(sections[HEADLINE], "No headline figure: the records hold no headline metric."),
        "## Samples",
        "",
        *_md_figures(
            sections[SAMPLES], "No sample grids: no cell wrote samples.png (the sample_grid evaluator)."
        ),
        "## Tables",
        "",
    ]
    for table in tables:
        body = table.markdown if table.markdown is not None else table.html
        if table.folded:  # GitHub renders Markdown inside <details> after a blank line
            parts += [f"<details><summary>{html.escape(table.title)}</summary>", "", body, ""]
        else:
            parts += [f"### {m(table.title)}", "", body, ""]
        if table.files:
            parts += [
                "Files: " + ", ".join(f"[{m(fmt)}]({file_link(p)})" for fmt, p in table.files.items()),
                "",
            ]
        parts += ["</details>", ""] if table.folded else []
    if not tables:
        parts += ["No tables.", ""]
    parts += ["## More figures", ""]
    parts += _md_figures(sections["figures"], "No figures: the records hold nothing more to draw.")
    return "\n".join(parts + _md_grid(exp) + _md_provenance(exp))


def _md_figures(figures: list[tuple[Figure, str]], empty: str) -> list[str]:
    """The figures of one section in Markdown, or a line saying why it has none."""
    out = []
    for fig, link in figures:
        out += [
            f"### {md_text(fig.title)}",
            "",
            f"![{md_text(fig.title)}]({link})",
            "",
            md_text(fig.caption),
            "",
        ]
    return out or [empty, ""]


def _md_provenance(exp: Experiment) -> list[str]:
    """The provenance section in Markdown: the compact list, then the per-cell table folded."""
    m = md_text
    out = ["## Provenance", "", *[f"- {m(label)}: {m(text)}" for label, text in summary_items(exp)], ""]
    rows = cell_rows(exp)
    if rows:
        out += [f"<details><summary>Per cell ({len(rows)})</summary>", ""]
        out += ["| " + " | ".join(CELL_HEADER) + " |", "|" + "---|" * len(CELL_HEADER)]
        out += ["| " + " | ".join(m(v) for v in row) + " |" for row in rows]
        out += ["", "</details>", ""]
    return out


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
