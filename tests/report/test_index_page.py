"""The report page answers first and fits a laptop's page: headline figure, then sample grids, then
tables (the long ones folded), every image scaled to the page, provenance stated; the headline's numbers
against an independent computation; a `†` reference that did not run is said not to.

A structural stand-in for a browser check (CI has no browser): the HTML parsed with html.parser and
the PNGs' sizes read from their headers."""

import html
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path
from statistics import mean, stdev
from urllib.parse import unquote

import pytest
from page_fixture import COMMIT, REMEDIES, SOURCE_FID, page_experiment
from records_fixture import bacc_runs, fid_value, no_aug_runs

from bench.cli import write_report
from bench.paper.paper_tables import paper_tables
from bench.report.collect import load_experiment
from bench.report.headline import headline_panels
from bench.report.provenance import cell_rows, short_summary, summary_items
from bench.report.render import render

PAGE_PX = 1366  # a laptop's window width
SEEDS = (0, 1, 2)


class Page(HTMLParser):
    """The page as a sequence of what matters for reading order and width."""

    def __init__(self):
        super().__init__()
        self.events, self.stack, self.summaries = [], [], []
        self.images, self.tables = [], []  # (src, style), (enclosing tags with class)
        self._in_summary = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in ("img", "meta", "br"):
            self.stack.append((tag, attrs.get("class", "")))
        if tag == "img":
            self.images.append((attrs["src"], attrs.get("style", "")))
            self.events.append(("img", attrs["src"]))
        elif tag == "table":
            self.tables.append(list(self.stack))
            self.events.append(("table", "details" if any(t == "details" for t, _ in self.stack) else ""))
        elif tag == "h2":
            self.events.append(("h2", attrs.get("id")))
        self._in_summary = tag == "summary"

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        if self._in_summary and data.strip():
            self.summaries.append(data.strip())
        if "Every metric the records hold" in data:
            self.events.append(("all-metrics caption", "details" if self._inside("details") else ""))

    def _inside(self, tag):
        return any(t == tag for t, _ in self.stack)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, without decoding the image."""
    head = path.read_bytes()[:33]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    assert zlib.crc32(head[12:29]) == struct.unpack(">I", head[29:33])[0]
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """`bench report`'s writer over a 3-method x 3-seed experiment with samples.png in every cell."""
    folder = page_experiment(tmp_path_factory.mktemp("page"))
    exp = load_experiment(folder)
    index, _ = write_report(exp, paper_tables(exp), folder / "report")
    page = Page()
    page.feed(index.read_text())
    return exp, index, page


@pytest.mark.slow
def test_the_page_opens_with_the_headline_then_samples_then_tables(report):
    _, _, page = report
    order = [
        ("h2", "headline"),
        ("img", "figures/headline_phantom_lt.png"),
        ("h2", "samples"),
        ("img", "figures/samples_phantom_lt.png"),
        ("h2", "tables"),
    ]
    positions = [page.events.index(e) for e in order]
    assert positions == sorted(positions)
    first_table = next(i for i, (kind, _) in enumerate(page.events) if kind == "table")
    assert first_table > positions[-1]  # no table before the answer and the pictures
    more = page.events.index(("h2", "figures"))
    assert page.events.index(("img", "figures/class_recall_phantom_lt.png")) > more


@pytest.mark.slow
def test_the_all_metrics_and_significance_tables_are_folded_the_papers_are_not(report):
    _, _, page = report
    assert ("all-metrics caption", "details") in page.events
    assert ("all-metrics caption", "") not in page.events
    assert {"All metrics: phantom_lt", "Paired differences by generative seed"} <= set(page.summaries)
    open_tables = [e for e in page.events if e == ("table", "")]
    assert len(open_tables) >= 5  # datasets, generative, downstream, geometry, ... shown unfolded


@pytest.mark.slow
def test_nothing_is_wider_than_a_laptops_page(report):
    """Every image scales to the page; every table scrolls in its own box; figures are drawn at most
    about twice the page's width, and the sample grids are not a long strip."""
    _, index, page = report
    text = index.read_text()
    assert "figure img { max-width: 100%; height: auto;" in text
    assert page.images and all("max-width: 100%" in style for _, style in page.images)
    assert all(any(tag == "div" and "wide" in cls for tag, cls in stack) for stack in page.tables)
    assert ".wide { max-width: 100%; overflow-x: auto; }" in text
    for src, _ in page.images:
        width, height = png_size(index.parent / unquote(src))
        assert width <= 2 * PAGE_PX, src
    width, height = png_size(index.parent / "figures" / "samples_phantom_lt.png")
    assert width <= PAGE_PX and width / height < 2.5  # the old side-by-side strip was 3200 x 466
    assert png_size(index.parent / "figures" / "headline_phantom_lt.png")[0] <= PAGE_PX


@pytest.mark.slow
def test_the_page_states_the_provenance_of_its_records(report):
    exp, index, _ = report
    text = index.read_text()
    assert '<h2 id="provenance">Provenance</h2>' in text
    items = dict(summary_items(exp))
    assert COMMIT in items["commit"] and "(clean tree) (6 cells)" in items["commit"]
    assert "uncommitted changes: +dirty) (3 cells)" in items["commit"]  # seed 2 was written dirty
    assert items["packages"] == "python 3.11.7, medaug-bench 0.1.0, torch 2.13.0+cpu, numpy 2.4.6"
    assert items["device"] == "cpu"
    assert items["config hashes"] == "9 distinct over 9 usable cell(s)"
    assert items["stage hashes"] == "encode: 1 (shared), train: 9"
    for label, value in items.items():
        assert f"<dt>{label}</dt><dd>{html.escape(value)}</dd>" in text
    rows = cell_rows(exp)
    assert len(rows) == 9 and rows[0][:5] == [
        "phantom_lt/fm/seed0",
        "2026-11-26T00:00:00+0000",
        COMMIT[:12],
        "cpu",
        "h-phantom_lt-fm-0",
    ]
    assert rows[2][2] == COMMIT[:12] + "+dirty"
    assert "<details><summary>Per cell (9)</summary>" in text
    assert html.escape(short_summary(exp)) in text  # and its line at the top
    assert "Provenance" in (index.parent / "index.md").read_text()


def test_the_headline_holds_each_methods_seeds_its_source_only_value_and_the_references(tmp_path):
    exp = load_experiment(page_experiment(tmp_path, samples=False))
    tail, downstream = headline_panels(exp, "phantom_lt")
    assert (tail.metric, tail.higher_is_better, tail.levels) == ("fid/tail", False, [])
    for arm in tail.arms:
        assert arm.values.by_seed == {s: fid_value(arm.method, s) for s in SEEDS}
        assert arm.source.mean == pytest.approx(mean(fid_value(arm.method, s) + SOURCE_FID for s in SEEDS))
        assert arm.values.std == pytest.approx(stdev(fid_value(arm.method, s) for s in SEEDS))
    assert (downstream.metric, downstream.higher_is_better) == ("bacc", True)
    optprior = next(a for a in downstream.arms if a.method == "optprior")
    assert optprior.values.mean == pytest.approx(mean(mean(bacc_runs("optprior", s)) for s in SEEDS))
    no_aug, best = downstream.levels
    assert no_aug.label == "no augmentation"
    assert no_aug.values.mean == pytest.approx(mean(mean(no_aug_runs(s)) for s in SEEDS))
    assert best.label == "best remedy: crt" and max(REMEDIES, key=REMEDIES.get) == "crt"
    assert best.values.mean == pytest.approx(no_aug.values.mean + REMEDIES["crt"])


def test_a_missing_reference_method_is_stated_in_every_format(tmp_path):
    """methods=[optprior, cbfm]: no fm, so no `†` can appear; each table that would carry it says so."""
    note = "† (relative to fm) not shown: fm is not in this experiment."
    tables = {
        t.name: t
        for t in paper_tables(load_experiment(page_experiment(tmp_path, ("optprior", "cbfm"), samples=False)))
    }
    for name in ("generative", "downstream"):
        assert note in tables[name].notes
        assert note in render(tables[name], "md") and note in render(tables[name], "html")
        assert r"$^{\dagger}$ (relative to fm) not shown: fm is not in this experiment." in render(
            tables[name], "latex"
        )
    with_fm = paper_tables(load_experiment(page_experiment(tmp_path / "fm", samples=False)))
    assert not any(note in t.notes for t in with_fm)


def test_the_headline_caption_explains_the_reference_lines_only_where_they_are_drawn(tmp_path):
    import json

    from bench.report.figures import LEVELS_CAPTION, headline_figures

    root = page_experiment(tmp_path / "with", samples=False)
    (figure,) = headline_figures(load_experiment(root), tmp_path / "out")
    assert LEVELS_CAPTION in figure.caption
    for path in Path(root).rglob("record.json"):  # the same cells without their downstream metrics
        record = json.loads(path.read_text())
        for field in ("metrics", "higher_is_better", "metric_info"):
            record[field] = {
                k: v for k, v in record.get(field, {}).items() if not k.startswith(("bacc", "macro_f1"))
            }
        path.write_text(json.dumps(record))
    stripped = load_experiment(root)
    assert [p.metric for p in headline_panels(stripped, "phantom_lt")] == ["fid/tail"]  # no downstream panel
    (figure,) = headline_figures(stripped, tmp_path / "out2")
    assert LEVELS_CAPTION not in figure.caption and "dashed" not in figure.caption
