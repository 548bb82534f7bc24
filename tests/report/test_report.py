"""The experiment index page: grid status with notes, tables with their files, figures, escaping, and
links that resolve relative to the index (HTML and Markdown)."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image
from records_fixture import complete_record

from bench.report.collect import load_experiment
from bench.report.figures import Figure
from bench.report.index import TableEntry, md_text, write_index
from bench.store.artifacts import write_json_atomic
from bench.store.gridfile import GRID, GridFile

FAILURE = "ValueError: x < 0 & <script>alert(1)</script>"


def _record(folder: Path, config_hash: str) -> None:
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(
        json.dumps(
            complete_record(
                {
                    "config_hash": config_hash,
                    "metrics": {},
                    "dataset": folder.parent.parent.name,
                    "method": folder.parent.name,
                    "seed": int(folder.name.removeprefix("seed")),
                }
            )
        )
    )


@pytest.fixture
def experiment(tmp_path):
    """a/fm ok, a/cpd failed (note with markup), b/fm refused (other config), b/cpd ok."""
    root, grid = tmp_path / "results" / "exp<1>", GridFile("exp<1>")
    for d in ("a", "b"):
        for m in ("fm", "cpd"):
            grid.add(d, m, 0, f"h{d}{m}")
    _record(root / "a" / "fm" / "seed0", "hafm")
    (root / "a" / "cpd" / "seed0").mkdir(parents=True)
    (root / "a" / "cpd" / "seed0" / "failure.json").write_text(json.dumps({"reason": FAILURE}))
    _record(root / "b" / "fm" / "seed0", "another")
    _record(root / "b" / "cpd" / "seed0", "hbcpd")
    write_json_atomic(root / GRID, grid.to_json())
    return load_experiment(root)


@pytest.fixture
def report_inputs(tmp_path):
    """Two tables with files under out/tables, a figure under out/figures and one outside out."""
    out = tmp_path / "out"
    for name in ("tables/main.csv", "tables/main table.tex", "tables/geo.csv"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x\n")
    tables = [
        TableEntry(
            "Main <results> & more",
            "<table><tr><td>0.91</td></tr></table>",
            {"csv": "tables/main.csv", "tex": "tables/main table.tex"},
        ),
        TableEntry(
            "Geometry",
            "<table><tr><td>1.2</td></tr></table>",
            {"csv": "tables/geo.csv"},
            markdown="| a |\n|---|\n| 1.2 |",
        ),
    ]
    figures = []
    for path, title in (
        (out / "figures" / "samples_a.png", "a: samples & <grids>"),
        (tmp_path / "elsewhere" / "geometry (b).png", "b: geometry"),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
        figures.append(Figure(path, title, f"Caption of {title} with x_1 * 2."))
    return out, tables, figures


class Links(HTMLParser):
    """Every href and src of a page, and the tags it uses."""

    def __init__(self):
        super().__init__()
        self.links, self.tags, self.anchors, self.ids = [], set(), [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.ids |= {v for k, v in attrs if k == "id"}
        found = [v for k, v in attrs if k in ("href", "src")]
        self.links += [v for v in found if not v.startswith("#")]
        self.anchors += [v[1:] for v in found if v.startswith("#")]  # within the page


def test_html_index_links_every_table_file_and_figure_relative_to_itself(experiment, report_inputs):
    out, tables, figures = report_inputs
    index = write_index(experiment, out, tables, figures, date="2024-05-01 12:00")
    assert index == out / "index.html"
    page = index.read_text()
    parser = Links()
    parser.feed(page)
    targets = {(index.parent / unquote(link)).resolve() for link in parser.links}
    expected = {(out / p).resolve() for t in tables for p in t.files.values()}
    expected |= {f.path.resolve() for f in figures}
    assert targets == expected and all(t.is_file() for t in targets)
    assert parser.anchors and set(parser.anchors) <= parser.ids  # the page's table of contents resolves
    assert all(not re.match(r"[a-z]+:", link) for link in parser.links)  # nothing absolute or external
    assert not parser.tags & {"script", "link", "iframe"}  # self-contained, opens offline
    assert page.count("<img ") == 2 and "<table><tr><td>0.91</td></tr></table>" in page  # fragment as is
    assert "Main &lt;results&gt; &amp; more" in page and "a: samples &amp; &lt;grids&gt;" in page
    assert "Caption of b: geometry with x_1 * 2." in page


def test_html_index_shows_the_grid_and_every_unusable_cell_with_its_note(experiment, report_inputs):
    out, tables, figures = report_inputs
    page = write_index(experiment, out, tables, figures, date="2024-05-01 12:00").read_text()
    assert "<h1>bench report: exp&lt;1&gt;</h1>" in page and "2024-05-01 12:00" in page
    assert "2 dataset(s) x 2 method(s) x 1 seed(s) = 4 cell(s): 2 ok, 1 missing, 1 refused." in page
    assert (
        "<script>" not in page and "ValueError: x &lt; 0 &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in page
    )
    assert "<code>a/cpd/seed0</code> (missing)" in page and "<code>b/fm/seed0</code> (refused)" in page
    assert "but the grid expects hbfm" in page
    rows = re.findall(r"<tr><th>(\w)</th>(.*?)</tr>", page)
    assert rows == [
        ("a", '<td>1/1 ok</td><td class="bad">0/1 ok</td>'),
        ("b", '<td class="bad">0/1 ok</td><td>1/1 ok</td>'),
    ]
    heads = ("Headline", "Samples", "Tables", "More figures", "Grid", "Provenance")
    sections = [page.index(f'">{h}</h2>') for h in heads]
    assert sections == sorted(sections)


def test_markdown_index_has_the_same_sections_with_working_links(experiment, report_inputs):
    out, tables, figures = report_inputs
    write_index(experiment, out, tables, figures, date="2024-05-01")
    text = (out / "index.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    links = re.findall(r"(?<!!)\[[^\]]*\]\(([^)]+)\)", text)
    assert images == ["figures/samples_a.png", "../elsewhere/geometry%20%28b%29.png"]
    assert links == ["tables/main.csv", "tables/main%20table.tex", "tables/geo.csv"]
    assert all((out / unquote(p)).is_file() for p in images + links)
    assert "# bench report: exp\\<1\\>" in text and "### Main \\<results\\> & more" in text
    assert "| a |\n|---|\n| 1.2 |" in text  # a table's own Markdown replaces its HTML
    assert "<table><tr><td>0.91</td></tr></table>" in text  # no Markdown given: the HTML fragment
    assert "- `a/cpd/seed0` (missing): no record: the cell failed (ValueError: x \\< 0 & \\<script\\>" in text
    assert "| a | 1/1 ok | 0/1 ok |" in text
    heads = ["## Headline", "## Samples", "## Tables", "## More figures", "## Grid", "## Provenance"]
    assert [text.index(s) for s in heads] == sorted(text.index(s) for s in heads)


def test_relative_paths_and_an_empty_report(experiment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("rep/fig").mkdir(parents=True)
    Image.new("RGB", (10, 10)).save("rep/fig/x.png")
    write_index(experiment, Path("rep"), [], [Figure(Path("rep/fig/x.png"), "x", "c")], date="d")
    assert 'src="fig/x.png"' in Path("rep/index.html").read_text()
    write_index(experiment, Path("empty"), [], [], date="d")
    page = Path("empty/index.html").read_text()
    assert "No tables." in page and "No figures" in page and "<img" not in page


def test_markdown_text_escapes_what_markdown_would_interpret():
    assert (
        md_text("a_b *c* [d](e) <f> |g| #h \\ `i`\nj")
        == "a\\_b \\*c\\* \\[d\\](e) \\<f\\> \\|g\\| \\#h \\\\ \\`i\\` j"
    )
