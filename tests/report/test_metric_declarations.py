"""Metrics declare themselves (bench.evaluator.Metric): records carry the declarations, reports read them.

A third-party evaluator outside the repository declares a new metric; a run with it shows the metric
with its label and direction in `bench tables` and in the run's summary, and orders it among the
built-in headline metrics by its rank. The built-in evaluators declare every metric they return, in
the headline order the summary always had; an evaluator that only sets a `higher_is_better` dict
still works.
"""

import json
import textwrap
from pathlib import Path

import pytest
from records_fixture import make_experiment

import gin
from bench import registry
from bench.evaluator import Evaluator, Metric, declarations, family, headline_names, metric_info
from bench.paper.paper_tables import paper_tables
from bench.report.collect import load_experiment
from bench.report.declarations import LEGACY_HEADLINE, LEGACY_LABELS, declared_label, headline_columns
from bench.report.summary import summary_table
from bench.report.tables import build_tables

PLUGIN = '''
"""Two third-party evaluators living outside bench: one declares its metrics, one predates them."""
import bench


@bench.register_evaluator("sharpness")
class Sharpness(bench.Evaluator):
    """1 / (1 + std) of the synthetic samples, and a made-up duration."""

    metrics = (bench.Metric("sharpness", "Sharpness", True, headline=True, rank=45),
               bench.Metric("sharpness_time", "sharpness time", False, unit="s"))

    def evaluate(self, cell):
        return {"sharpness": 1.0 / (1.0 + float(cell.synthetic.x.double().std())), "sharpness_time": 2.5}


@bench.register_evaluator("legacy")
class Legacy(bench.Evaluator):
    """Written before metrics declared themselves: a direction dict only."""

    higher_is_better = {"legacy_mean": False}

    def evaluate(self, cell):
        return {"legacy_mean": float(cell.synthetic.x.double().mean())}
'''
RUN = [
    "run",
    "methods=[fm]",
    "datasets=[synthetic2d]",
    "seeds=[0]",
    "pipeline.evaluators=['swd','sharpness','legacy']",
    "train.steps=3",
    "train.batch_size=64",
    "sample.nfe=2",
    "synthetic2d.n_max=200",
    "synthetic2d.imbalance_ratio=10.0",
    "synthetic2d.n_test_per_class=20",
]


def make_plugin(root: Path) -> Path:
    """Package `sharpplug` and a fake dist-info advertising its evaluators (as tests/core/test_plugins.py)."""
    (root / "sharpplug").mkdir()
    (root / "sharpplug" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "sharpplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sharpplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[bench.evaluators]\nsharpness = sharpplug:Sharpness\nlegacy = sharpplug:Legacy\n"
    )
    return root


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory, bench_cli):
    """A tiny synthetic2d run with the plugin's evaluators beside swd: (plugin folder, experiment, output)."""
    root = make_plugin(tmp_path_factory.mktemp("plugin"))
    out = bench_cli(*RUN, f"results_dir={root / 'res'}", cwd=root, env_extra={"PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    return root, root / "res" / "quick", out


def _row(markdown: str, start: str) -> list[str]:
    """The cells of the Markdown table row whose first cell starts with `start`, without the marks
    (`‡`: 3 training steps do not converge)."""
    line = next(ln for ln in markdown.splitlines() if ln.startswith(f"| {start}"))
    return [c.strip().rstrip("‡").rstrip() for c in line.strip("|").split("|")]


@pytest.mark.slow
def test_a_plugin_metric_shows_with_its_label_and_direction_in_bench_tables(plugin_run, bench_cli):
    root, exp, _ = plugin_run
    rec = json.loads((exp / "synthetic2d" / "fm" / "seed0" / "record.json").read_text())
    assert rec["metric_info"]["sharpness"] == {
        "label": "Sharpness",
        "higher_is_better": True,
        "headline": True,
        "unit": "",
        "rank": 45,
    }
    assert rec["higher_is_better"]["sharpness"] is True and rec["higher_is_better"]["sharpness_time"] is False
    out = bench_cli("tables", str(exp), cwd=root, env_extra={"PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    table = out.stdout.split("### All metrics: synthetic2d", 1)[1].split("###", 1)[0]
    assert _row(table, "Metric") == ["Metric", "Label", "fm"]
    assert _row(table, "sharpness ↑") == ["sharpness ↑", "Sharpness", f"{rec['metrics']['sharpness']:.3g}"]
    assert _row(table, "sharpness_time ↓") == ["sharpness_time ↓", "sharpness time (s)", "2.50"]
    assert _row(table, "swd/tail ↓")[1] == "SWD tail"  # the built-ins' declared labels, beside their names
    # the evaluator with only a direction dict: its name is its label, its direction its arrow
    assert _row(table, "legacy_mean ↓")[:2] == ["legacy_mean ↓", "legacy_mean"]
    assert rec["metric_info"]["legacy_mean"] == {
        "label": "legacy_mean",
        "higher_is_better": False,
        "headline": False,
        "unit": "",
        "rank": 1000,
    }


@pytest.mark.slow
def test_a_plugin_headline_metric_joins_the_summary_and_the_progress_line_by_its_rank(plugin_run):
    _, exp, out = plugin_run
    rec = json.loads((exp / "synthetic2d" / "fm" / "seed0" / "record.json").read_text())
    headline, everything = (exp / "summary.md").read_text().split("## All metrics", 1)
    for text in (out.stdout, headline):  # printed, and summary.md's headline table
        header = _row(text, "method")
        # rank 45: after the built-ins' IRS (40), before SWD tail (50) and SWD all (60)
        assert header[2:5] == ["sharpness ↑", "swd/tail ↓", "swd/all ↓"], header
        assert "legacy_mean" not in text and "sharpness_time" not in text  # not headline metrics
    assert f"{rec['metrics']['sharpness']:.4g}" in _row(headline, "fm")
    assert "legacy_mean ↓" in everything and "sharpness_time ↓" in everything
    assert "synthetic2d/fm/seed0: finished in " in out.stderr
    assert f"; sharpness {rec['metrics']['sharpness']:.4g}" in out.stderr  # the cell's first headline metric


def test_every_built_in_evaluator_declares_each_metric_it_can_return_with_its_direction():
    """Each name in an evaluator's `higher_is_better` (every metric it can return with a direction)
    belongs to one declaration of the same direction, and the declared labels are unique."""
    gin.clear_config()
    checked = []
    for name in registry.evaluators.names():
        cls = registry.evaluators.get(name)
        if not cls.__module__.startswith("bench.evaluators."):
            continue
        ev = cls()
        declared = {m.name: m for m in ev.metrics}
        assert len(declared) == len(ev.metrics) and declarations(ev) == ev.metrics, name
        for metric, higher in ev.higher_is_better.items():
            base = family(metric, declared)
            assert base is not None and declared[base].higher_is_better == higher, (name, metric)
        labels = [m.title for m in ev.metrics]
        assert len(set(labels)) == len(labels), (name, labels)
        checked.append(name)
    assert {
        "fid",
        "kid",
        "irs",
        "swd",
        "downstream",
        "cond_accuracy",
        "geometry",
        "knn_purity",
        "confounder",
        "memorisation",
        "sample_grid",
    } <= set(checked)


def test_the_built_in_headline_metrics_keep_the_summarys_order_and_the_tables_labels():
    gin.clear_config()
    built_in = [
        m
        for name in registry.evaluators.names()
        if (cls := registry.evaluators.get(name)).__module__.startswith("bench.evaluators.")
        for m in cls().metrics
    ]
    info = {m.name: m.info() for m in reversed(built_in)}  # declaration order must not matter
    assert headline_names(info) == list(LEGACY_HEADLINE)
    labels = {m.name: m.label for m in built_in}
    assert {k: labels[k] for k in LEGACY_LABELS} == LEGACY_LABELS  # old and new records read the same


@pytest.mark.slow
def test_a_small_runs_record_declares_every_metric_it_holds(tmp_path):
    """optprior on synthetic2d with the quick experiment's evaluators (swd, cond_accuracy, knn_purity,
    confounder, geometry): every recorded name, variants and per-class values included, has a declaration."""
    from bench.pipeline.assemble import CellSpec, RunRequest, build_cell
    from bench.pipeline.runner import run_cell

    gin.clear_config()
    bindings = [
        "train.steps = 3",
        "train.batch_size = 64",
        "sample.nfe = 2",
        "synthetic2d.n_max = 200",
        "synthetic2d.imbalance_ratio = 10.0",
        "synthetic2d.n_test_per_class = 20",
    ]
    try:
        cell = build_cell(CellSpec("quick", "synthetic2d", "optprior", 0), RunRequest(bindings=bindings))
        record = run_cell(cell, tmp_path)
    finally:
        gin.clear_config()
    info = record["metric_info"]
    assert [n for n in record["metrics"] if family(n, info) is None] == []
    # swd/class covers swd/class/<name> and its @source values
    assert {
        "swd/tail",
        "cond_acc/tail",
        "knn_purity_gap/latent",
        "geom_alignment",
        "bayes_risk/learned/reduction",
        "swd/class",
    } <= set(info)
    assert all(info[family(n, info)]["higher_is_better"] == h for n, h in record["higher_is_better"].items())
    assert headline_names(info) == ["swd/tail", "swd/all", "coverage/tail", "cond_acc/tail"]


def test_an_evaluator_with_only_a_direction_dict_is_declared_with_its_names():
    class Old(Evaluator):
        higher_is_better = {"old_score": True, "old_error": False}

    class Duck:  # not even an Evaluator subclass
        higher_is_better = {"duck": False}

    assert declarations(Old()) == (
        Metric("old_score", "old_score", True),
        Metric("old_error", "old_error", False),
    )
    info = metric_info([Old(), Duck()], ["old_error", "old_error@source", "duck"])
    plain = {"higher_is_better": False, "headline": False, "unit": "", "rank": 1000}
    assert info == {"old_error": {"label": "old_error", **plain}, "duck": {"label": "duck", **plain}}
    assert headline_names(info) == []


def test_a_declaration_derives_the_direction_dict_and_covers_its_family():
    class New(Evaluator):
        metrics = (
            Metric("score", "score", True),
            Metric("count", "count", None),
            Metric("score/tail", "tail", False),
        )

    assert New.higher_is_better == {"score": True, "score/tail": False}  # a count has no better side
    declared = {m.name: m for m in New.metrics}
    assert family("score@source", declared) == "score" and family("score/no_aug", declared) == "score"
    assert family("score/tail@init", declared) == "score/tail"  # the longest declared prefix
    assert family("score_std", declared) is None and family("scores/x", declared) is None


def _declare(folder: Path, declared: dict) -> None:
    """Give every record of an experiment folder a `metric_info` (as a run since declarations writes it)."""
    for path in sorted(folder.glob("*/*/seed*/record.json")):
        rec = json.loads(path.read_text())
        rec["metric_info"] = {name: m.info() for name, m in declared.items()}
        path.write_text(json.dumps(rec))


def test_reports_title_and_rank_metrics_by_the_records_declarations(tmp_path):
    folder = make_experiment(tmp_path, methods=("fm", "optprior"))
    _declare(
        folder,
        {
            "fid/tail": Metric("fid/tail", "Fréchet tail", False, headline=True, rank=50),
            "bacc": Metric("bacc", "balanced acc.", True, headline=True, rank=5),
        },
    )
    exp = load_experiment(folder)
    tables = {t.name: t for t in build_tables(exp)}
    assert [c.title for c in tables["generative"].columns][:1] == ["Fréchet tail"]
    # macro_f1 is not declared here: its legacy label
    assert [c.title for c in tables["downstream"].columns] == ["balanced acc.", "macro-F1"]
    everything = tables["all_phantom_lt"]
    assert everything.row_header == ["Metric", "Label"]
    labels = {r[0]: r[1] for r, _ in everything.rows}
    assert labels["fid/tail ↓"] == "Fréchet tail" and labels["bacc/no_aug ↑"] == "balanced acc. (no_aug)"
    assert labels["n/fid"] == ""  # undeclared: no label
    assert declared_label(exp.records(), "fid/tail@source") == "Fréchet tail"
    # the summary's headline columns are the declared ones, by rank
    assert headline_columns(exp.records()) == ["bacc", "fid/tail"]
    assert _row(summary_table(exp.records()), "method")[2:4] == ["bacc ↑", "fid/tail ↓"]


def test_records_without_declarations_keep_todays_headline_and_mix_with_declaring_ones(tmp_path):
    old = make_experiment(tmp_path / "old", methods=("fm",))
    assert headline_columns(load_experiment(old).records()) == ["fid/tail", "bacc", "macro_f1"]
    assert {t.name: t for t in paper_tables(load_experiment(old))}["all_phantom_lt"].row_header == ["Metric"]
    new = make_experiment(tmp_path / "new", methods=("fm",))
    _declare(new, {"geom_alignment": Metric("geom_alignment", "alignment", True, headline=True, rank=15)})
    records = load_experiment(old).records() + load_experiment(new).records()
    assert headline_columns(records) == ["fid/tail", "geom_alignment", "bacc", "macro_f1"]
