"""The paper's tables, built from an experiment's stored records only (never from live objects).

Tables (each written only when the records hold its metrics):
`datasets` (dataset statistics), `generative` (Tab. 5: FID / IRS, or SWD / coverage for vector
data, each method followed by its "(source only)" line when the records hold `<metric>@source`),
`downstream` (Tab. 4: bAcc and macro-F1; a "no generative augmentation" block of the
no-augmentation row and one row per long-tail remedy on real data alone, then each method followed
by its "+ remedy" rows, the remedy applied on top of its synthetic set), `geometry` (Tab. 2, with
the Bayes-risk reduction), `confounder` (Tab. 3), the tables the caller adds (`build_tables`'s
`extra`: the paper's ablation, bench.paper.ablation), one `all_<dataset>` table per dataset with
every metric the records hold (metrics as rows, `@source` / `@init` lines under their plain metric;
with the records' declared labels beside the names when they declare them) and `significance`
(every paired comparison behind the marks: per-seed differences, mean with its t interval, p).
Column titles are the labels the records declare (bench.report.declarations).

Rows and columns follow the experiment config (grid.json). The unit of replication is the
generative seed: entries are mean +- sample std over generative seeds, downstream scores first
averaged over the classifier seeds of each generative seed (the record's per-seed details), since
those classifiers share one synthetic set. Significance marks: `*` vs no augmentation, `†` vs the
baseline method the caller names (`TableOptions.baseline`; `bench tables` defaults to fm, vanilla
flow matching), paired by generative seed (bench.metrics.significance); a table whose baseline did
not run says so in a note instead of dropping `†` silently. Other marks: `§`
only some seeds usable, `‡` training did not converge, `?` an unreliable Bayes-risk estimate; a
grid cell without a usable record is a dash. Each mark comes with a note saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.errors import BenchError
from bench.evaluator import split_network
from bench.metrics.significance import DEFAULT_TEST, compare, describe, limits
from bench.report.collect import OK, Experiment
from bench.report.declarations import declared, declared_label, metric_title, mixed_features, with_networks
from bench.report.summary import (
    AUG_PREFIX,
    VARIANTS,
    convergence_text,
    remedies_in,
    split_variant,
    unconverged,
)
from bench.report.tabular import (
    MARK_FM,
    MARK_NO_AUG,
    MARK_PARTIAL,
    MARK_UNCONVERGED,
    MARK_UNRELIABLE,
    MISSING,
    NOT_APPLICABLE,
    Column,
    Entry,
    Table,
    mark_best,
)

NO_AUG_ROW = "no augmentation"
NO_AUG_SUFFIX = "/no_aug"
REMEDY_ROW = "{} (real data only)"  # a long-tail remedy without generative augmentation
COMBINED_ROW = "{} + {}"  # method + remedy
SOURCE = "@source"
RUNS = "Mean ± sample std over runs"  # caption placeholder, replaced once every entry is known
VARIANT_CAPTIONS = {
    "@source": '"(source only)": the method\'s source samples decoded with no flow.',
    "@init": '"(untrained)": the untrained network\'s samples.',
}
REFERENCE_LINES = "Reference lines are never bold or tested."
PRETRAINED_CAPTION = " A network in brackets: the metric on that pretrained network's features."
# each table's metrics (titled by their declared labels); the generative ones with their sample-count metric
GENERATIVE = {
    "fid/tail": "n/fid",
    "fid/pooled": "n/fid",
    "irs_inf/tail": "n/irs",
    "irs_adjusted/tail": "n/irs",
    "swd/tail": None,
    "coverage/tail": None,
}
DOWNSTREAM = ("bacc", "macro_f1")
GEOMETRY = ("alignment", "radial_std", "radial_cv", "path_length")  # stats: geom_<stat> titles the column
BAYES = "bayes_risk"  # the geometry table's Bayes-risk reduction column
BAYES_TITLE = "Bayes-risk reduction"  # one column over two metrics (the N(0, I) and learned sources)
# geometry row kind -> metric of a GEOMETRY stat (format with stat) or of the Bayes-risk column
GEOMETRY_ROWS = {
    "gauss": ("geom_{}_gauss", "bayes_risk/standard/reduction"),
    "method": ("geom_{}", "bayes_risk/learned/reduction"),
    "init": ("geom_{}/prior_init", None),
}
RISK_DIAGNOSTICS = ("ess", "identity_gap", "reliable")  # bayes_risk/<source>/<key> that are not risks
# metrics that do not depend on the trained network (prior, subclasses, real-data baselines, counts)
UNTRAINED_PREFIXES = ("geom_", "bayes_risk/", "probe_", "knn_purity", "n/")
RISK_SOURCES = {"standard": "N(0, I)", "learned": "learned"}
CONFOUNDER = ("probe_bacc", "probe_perm_bacc", "probe_gap", "probe_near_chance")


@dataclass(frozen=True)
class TableOptions:
    """Significance settings of a report."""

    test: str = DEFAULT_TEST  # bench.metrics.significance.TESTS
    alpha: float = 0.05
    baseline: str | None = None  # the method marked against with `†` (the caller's; None: no `†`)


# a table the caller adds: built from the experiment and the options, None when the records do not support it
TableBuilder = Callable[[Experiment, TableOptions], Table | None]


def build_tables(
    exp: Experiment, options: TableOptions = TableOptions(), extra: Sequence[TableBuilder] = ()
) -> list[Table]:
    """Every table the records support, each with best entries marked; `extra` (e.g. the paper's
    ablation, bench.paper.ablation) after the confounder table, before the per-dataset ones."""
    refuse_mixed_features(exp)
    log: list = []  # every paired comparison, for the significance table
    builders: list[Callable[[], Table | None]] = [
        lambda: datasets_table(exp),
        lambda: generative_table(exp, options, log),
        lambda: downstream_table(exp, options, log),
        lambda: geometry_table(exp),
        lambda: confounder_table(exp),
        *(lambda b=b: b(exp, options) for b in extra),
    ]
    tables = [t for t in (b() for b in builders) if t is not None]
    tables += [t for d in exp.datasets if (t := all_metrics_table(exp, d)) is not None]
    tables += [t for t in [significance_table(log, options)] if t is not None]
    for t in tables:
        mark_best(t)
        t.caption = t.caption.replace(RUNS, _runs_text(t))
    return tables


def refuse_mixed_features(exp: Experiment) -> None:
    """One error when a dataset's records computed one metric on two different features (numbers
    on two networks have two names, bench.metrics.feature_names; this catches two weight files of
    one network, or two domain networks), instead of a column that mixes them."""
    for d in exp.datasets:
        mixed = mixed_features(exp.records(d))
        if mixed:
            raise BenchError(
                f"{exp.folder}: records of {d} computed {mixed}, which are not comparable; rerun "
                "those cells on one feature network or report them from separate results folders"
            )


def _runs_text(table: Table) -> str:
    """'Mean ± sample std over n = 3 generative seeds' (or a range), saying how downstream runs were pooled."""
    entries = [e for _, row in table.rows for e in row if e.values and e.text is None]
    ns = sorted({len(e.values) for e in entries})
    if not ns:
        return "No runs"
    n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    text = (
        "One generative seed each (no std)"
        if n == "1"
        else f"Mean ± sample std over n = {n} generative seeds"
    )
    if any(len(key) > 1 for e in entries for key in e.runs):
        text += " (downstream: classifier seeds averaged within each generative seed first)"
    return text


# ---- runs and entries ------------------------------------------------------------------------


def runs_of(record: dict, metric: str) -> dict:
    """The runs behind a metric in one record: per-seed details lists when stored, else the mean.

    Keys are (generative seed, run index) for detail lists and (generative seed,) otherwise.
    """
    seed = record["seed"]
    for details in (record.get("details") or {}).values():
        values = details.get(metric) if isinstance(details, dict) else None
        if isinstance(values, list) and values and all(isinstance(v, (int, float)) for v in values):
            return {(seed, i): float(v) for i, v in enumerate(values)}
    value = record.get("metrics", {}).get(metric)
    return {} if value is None else {(seed,): float(value)}


def direction(exp: Experiment, metric: str) -> bool | None:
    """higher_is_better of a metric from the first record that states it, else from grid.json, else
    (for `@source` / `@init` metrics) that of its plain metric."""
    for rec in exp.records():
        if metric in rec.get("higher_is_better", {}):
            return bool(rec["higher_is_better"][metric])
    for metrics in exp.expected_metrics.values():
        if metric in metrics:
            return bool(metrics[metric])
    base, suffix = split_variant(metric)
    return direction(exp, base) if suffix else None


def has_metric(exp: Experiment, metric: str, dataset: str | None = None) -> bool:
    """A record holds the metric, or (for a dataset without any usable record) its evaluators
    declare it in grid.json: the column stays, with dashes and a note, when all its cells are lost."""
    if any(metric in r.get("metrics", {}) for r in exp.records(dataset)):
        return True
    return (
        dataset is not None and not exp.records(dataset) and metric in exp.expected_metrics.get(dataset, {})
    )


def method_entry(
    exp: Experiment,
    table: Table,
    dataset: str,
    method: str,
    metric: str,
    trained: bool = False,
    ranked: bool = True,
) -> Entry:
    """Runs of (dataset, method) for `metric` over its seeds; grid problems become marks and notes.

    `trained`: the metric depends on the trained network, so seeds whose training did not converge
    mark it `‡`; `ranked` False: a reference line (never bold, never tested).
    """
    cells = exp.results(dataset, method)
    ok = [c for c in cells if c.status == OK]
    bad = [c for c in cells if c.status != OK]
    if not ok:
        table.add_note(f"– {dataset}/{method}: {_seed_notes(bad)}")
        return Entry(state=MISSING, ranked=ranked)
    runs, used = {}, []
    for c in ok:
        own = runs_of(c.record, metric)
        runs |= own
        used += [c.record] if own else []
    if not runs:
        return Entry(state=NOT_APPLICABLE, ranked=ranked)
    entry = Entry(runs=runs, ranked=ranked)
    if bad:
        entry.marks += MARK_PARTIAL
        table.add_note(f"§ {dataset}/{method}: mean over {len(ok)} of {len(cells)} seeds; {_seed_notes(bad)}")
    if trained:
        _mark_unconverged(table, dataset, method, used, entry)
    _mark_unreliable(table, dataset, method, used, metric, entry)
    return entry


def _mark_unconverged(table: Table, dataset: str, method: str, records: list, entry: Entry) -> None:
    """`‡` and a note when the training of a seed behind the entry did not converge."""
    bad = unconverged(records)
    if bad:
        entry.marks += MARK_UNCONVERGED
        table.add_note(
            f"{MARK_UNCONVERGED} {dataset}/{method}: training did not converge for {convergence_text(bad)}"
        )


def risk_source(metric: str) -> str | None:
    """The source of a Bayes-risk value `bayes_risk/<source>/<key>` (None for other metrics and diagnostics)."""
    parts = metric.split("/")
    if len(parts) == 3 and parts[0] == BAYES and parts[2] not in RISK_DIAGNOSTICS:
        return parts[1]
    return None


def _mark_unreliable(
    table: Table, dataset: str, method: str, records: list, metric: str, entry: Entry
) -> None:
    """`?` and a note when a seed's Bayes-risk estimate behind the entry was flagged unreliable."""
    source = risk_source(metric)
    if source is None:
        return
    prefix = f"{BAYES}/{source}/"
    bad = [
        r
        for r in records
        if r["metrics"].get(prefix + "reliable") is not None and not r["metrics"][prefix + "reliable"]
    ]
    if not bad:
        return
    entry.marks += MARK_UNRELIABLE
    seeds = ", ".join(f"seed{r.get('seed')}" for r in bad)
    ess, gap = (
        ", ".join(_number(r["metrics"].get(prefix + k)) for r in bad) for k in ("ess", "identity_gap")
    )
    table.add_note(
        f"{MARK_UNRELIABLE} {dataset}/{method}, {RISK_SOURCES.get(source, source)} source: unreliable "
        f"Monte-Carlo estimate for {seeds} (effective posterior size {ess}, identity gap {gap})"
    )


def _number(value) -> str:
    return "n/a" if not isinstance(value, (int, float)) else f"{value:.3g}"


def _seed_notes(cells: list) -> str:
    """'seed0, seed2: <note>; seed1: <other note>' for unusable cells, grouping equal notes."""
    by_note: dict[str, list[str]] = {}
    for c in cells:
        by_note.setdefault(c.note, []).append(f"seed{c.seed}")
    return "; ".join(f"{', '.join(seeds)}: {note}" for note, seeds in by_note.items())


def real_only_entry(exp: Experiment, dataset: str, metric: str) -> Entry:
    """Runs of a classifier trained without synthetic data (`<metric>/no_aug`, `<metric>/<remedy>`):
    every cell of a dataset holds the same shared runs, the first cell of each key wins."""
    runs: dict = {}
    for rec in exp.records(dataset):
        for key, value in runs_of(rec, metric).items():
            runs.setdefault(key, value)
    return Entry(runs=runs) if runs else _absent(exp, dataset)


def _absent(exp: Experiment, dataset: str) -> Entry:
    """No runs: missing when the dataset has no usable record at all, else not applicable."""
    return Entry(state=NOT_APPLICABLE if exp.records(dataset) else MISSING)


class Marker:
    """Tests entries against references by generative seed, marks them, logs each comparison and
    writes the table's footnote."""

    def __init__(self, options: TableOptions, table: Table, log: list):
        self.options, self.table, self.log = options, table, log
        self.sizes, self.used, self.key_lengths = [], set(), set()

    def mark(self, entry: Entry, reference: dict, symbol: str, where: tuple) -> None:
        """Mark `entry` with `symbol` when its seeds differ from `reference`'s; `where` = (dataset, column, method)."""
        if not entry.ranked or not entry.runs or not reference:
            return
        result = compare(entry.runs, reference, self.options.test, self.options.alpha)
        if result is None:
            return
        self.sizes.append(result.n)
        self.key_lengths |= {len(k) for k in entry.runs}
        self.used.add(symbol)
        self.log.append((self.table.name, *where, self._reference(symbol), result))
        if result.significant:
            entry.marks += symbol

    def _reference(self, symbol: str) -> str:
        return NO_AUG_ROW if symbol == MARK_NO_AUG else self.options.baseline

    def footnote(self) -> None:
        """One note: what the marks mean, the test, n seeds, and what that n can and cannot show."""
        if not self.sizes:
            return
        marks = "; ".join(
            f"{s} differs from {self._reference(s)}" for s in (MARK_NO_AUG, MARK_FM) if s in self.used
        )
        lo, hi = min(self.sizes), max(self.sizes)
        pooled = (
            ", classifier seeds averaged within each generative seed first since they share one synthetic set"
            if 2 in self.key_lengths
            else ""
        )
        alpha = self.options.alpha
        self.table.add_note(
            f"{marks} ({describe(self.options.test)}, p < {alpha:g}; unit: the generative seed, paired by "
            f"generative seed, n = {lo if lo == hi else f'{lo}-{hi}'} seed{'' if hi == 1 else 's'}{pooled}). "
            f"{limits(self.options.test, hi, alpha, lo)} Per-seed differences, their mean and its "
            f"{100 * (1 - alpha):g}% t interval: see the significance table."
        )


def _n_subtitle(exp: Experiment, dataset: str, n_metric: str | None) -> str:
    """'n = 150' (or a range) from the records' sample-count metric."""
    if n_metric is None:
        return ""
    ns = sorted(
        {int(r["metrics"][n_metric]) for r in exp.records(dataset) if n_metric in r.get("metrics", {})}
    )
    if not ns:
        return ""
    return f"n = {ns[0]:,}" if len(ns) == 1 else f"n = {ns[0]:,}-{ns[-1]:,}"


def runs_caption(what: str) -> str:
    """A caption ending in the runs placeholder (filled once every entry is known) and the bold rule."""
    return f"{what} {RUNS}; bold: best per column."


# ---- the paper's tables ---------------------------------------------------------------------


def datasets_table(exp: Experiment) -> Table | None:
    """Dataset statistics from each dataset's first usable record."""
    if not exp.records():
        return None
    cols = ["classes", "train", "test", "IR", "ULT", "LT", "MT", "Head", "synthetic"]
    t = Table(
        "datasets",
        "Datasets",
        "Training samples, held-out samples, imbalance ratio (largest / "
        "smallest train class), classes per augmentation group and synthetic images planned.",
        ["Dataset"],
        [Column(c) for c in cols],
    )
    for d in exp.datasets:
        recs = exp.records(d)
        if not recs:
            t.add_row([d], [Entry(state=MISSING) for _ in cols])
            for m in exp.methods_of(d):
                t.add_note(f"– {d}/{m}: {_seed_notes(exp.results(d, m))}")
            continue
        t.add_row([d], [Entry(text=v) for v in _dataset_stats(recs[0])])
    return t


def _dataset_stats(rec: dict) -> list[str]:
    counts = [c for c in rec.get("train_counts", []) if c > 0]
    plan = rec.get("augmentation") or []
    groups = [sum(1 for p in plan if p.get("group") == g) for g in ("ULT", "LT", "MT", "Head")]
    ir = f"{max(counts) / min(counts):.1f}" if counts else "n/a"
    synth = sum(p.get("synthetic", 0) for p in plan)
    return [
        str(len(rec.get("class_names", []))),
        f"{sum(counts):,}",
        f"{rec.get('n', {}).get('test', 0):,}",
        ir,
        *(str(g) if plan else "n/a" for g in groups),
        f"{synth:,}" if plan else "n/a",
    ]


def method_table(
    exp: Experiment,
    name: str,
    title: str,
    caption: str,
    metrics,
    methods_for,
    n_metrics: dict | None = None,
    trained: bool = False,
) -> tuple[Table, list] | None:
    """Methods as rows, (dataset, metric) as columns for every metric present on that dataset, titled
    by its label (`trained`: mark seeds whose training did not converge); the table and its
    (dataset, metric, title) columns."""
    cols = [
        (d, m, metric_title(exp.records(), m)) for d in exp.datasets for m in metrics if has_metric(exp, m, d)
    ]
    if not cols:
        return None
    columns = [
        Column(label, direction(exp, m), _n_subtitle(exp, d, (n_metrics or {}).get(m)), group=d)
        for d, m, label in cols
    ]
    table = Table(name, title, caption, ["Method"], columns)
    for method in methods_for(exp):
        table.add_row([method], [method_entry(exp, table, d, method, m, trained) for d, m, _ in cols])
    return table, cols


def generative_table(exp: Experiment, options: TableOptions, log: list) -> Table | None:
    """Tab. 5: generative quality per dataset, vs the baseline method, each method's source-only line under it."""
    metrics = with_networks(exp.records(), GENERATIVE)  # each on every feature network recorded
    built = method_table(
        exp,
        "generative",
        "Generative metrics",
        runs_caption(
            "FID (lower is better) and IRS (higher) on domain features at the "
            "stated n per column, SWD / subclass coverage for vector data."
            + (PRETRAINED_CAPTION if len(metrics) > len(GENERATIVE) else "")
        ),
        metrics,
        lambda e: e.methods,
        {m: GENERATIVE[split_network(m)[0]] for m in metrics},
        trained=True,
    )
    if built is None:
        return None
    table, cols = built
    if _add_source_rows(exp, table, cols):
        table.caption = table.caption.replace(RUNS, f"{VARIANT_CAPTIONS[SOURCE]} {REFERENCE_LINES} {RUNS}")
    _mark_vs_baseline(table, cols, options, Marker(options, table, log))
    return table


def _add_source_rows(exp: Experiment, table: Table, cols: list) -> bool:
    """Under each method's row, its "(source only)" line of `<metric>@source` when its records hold one;
    whether any was added."""
    rows = []
    for labels, entries in table.rows:
        rows.append((labels, entries))
        method = labels[0]
        if any(m + SOURCE in r.get("metrics", {}) for d, m, _ in cols for r in exp.records(d, method)):
            rows.append(
                (
                    [f"{method} ({VARIANTS[SOURCE]})"],
                    [method_entry(exp, table, d, method, m + SOURCE, ranked=False) for d, m, _ in cols],
                )
            )
    added = len(rows) > len(table.rows)
    table.rows = rows
    return added


def _mark_vs_baseline(
    table: Table, cols: list, options: TableOptions, marker: Marker, skip: frozenset = frozenset()
) -> None:
    """`†` on each method entry (not the baseline's, nor the rows in `skip`) that differs from the
    baseline's, then the footnote."""
    base_row = next((entries for labels, entries in table.rows if labels[0] == options.baseline), None)
    if base_row is not None:
        for labels, entries in table.rows:
            if labels[0] not in (options.baseline, NO_AUG_ROW, *skip):
                for entry, base, (d, _, title) in zip(entries, base_row, cols):
                    marker.mark(entry, base.runs, MARK_FM, (d, title, labels[0]))
    marker.footnote()
    if base_row is None and options.baseline is not None:
        table.add_note(missing_baseline_note(options.baseline))


def missing_baseline_note(baseline: str) -> str:
    """The note of a table whose `†` reference method did not run: a mark that cannot appear is
    said not to, instead of silently missing."""
    return f"{MARK_FM} (relative to {baseline}) not shown: {baseline} is not in this experiment."


def downstream_table(exp: Experiment, options: TableOptions, log: list) -> Table | None:
    """Tab. 4: balanced accuracy and macro-F1. First the "no generative augmentation" block (no
    augmentation, then each long-tail remedy on real data alone), then each method and its
    "+ remedy" rows; every row marked vs no augmentation, the methods' own rows vs the baseline too."""
    alone, combined = remedies_in(exp.records())
    caption = (
        "Balanced accuracy and macro-F1 on the held-out split of classifiers trained on real data plus "
        "each method's synthetic set"
    )
    if alone or combined:
        caption += (
            "; above the methods, classifiers without generative augmentation (plain, and each long-tail "
            'remedy on real data alone); "<method> + <remedy>": the remedy on top of the method\'s '
            "synthetic set; all with the same classifier seeds, splits and early stopping"
        )
    built = method_table(
        exp,
        "downstream",
        "Downstream classification",
        runs_caption(caption + "."),
        DOWNSTREAM,
        lambda e: e.methods,
        trained=True,
    )
    if built is None:
        return None
    table, cols = built
    head = [([NO_AUG_ROW], [real_only_entry(exp, d, m + NO_AUG_SUFFIX) for d, m, _ in cols])]
    head += [
        ([REMEDY_ROW.format(r)], [real_only_entry(exp, d, f"{m}/{r}") for d, m, _ in cols]) for r in alone
    ]
    rows = []
    for labels, entries in table.rows:
        rows.append((labels, entries))
        rows += [
            (
                [COMBINED_ROW.format(labels[0], r)],
                [
                    method_entry(exp, table, d, labels[0], f"{m}/{AUG_PREFIX}{r}", trained=True)
                    for d, m, _ in cols
                ],
            )
            for r in combined
            if any(f"bacc/{AUG_PREFIX}{r}" in rec.get("metrics", {}) for rec in exp.records(method=labels[0]))
        ]
    table.rows = head + rows
    marker = Marker(options, table, log)
    for labels, entries in table.rows[1:]:
        for entry, (d, m, title) in zip(entries, cols):
            # the same records' no-augmentation classifiers: same data split, generative and classifier seeds
            marker.mark(entry, _no_aug_runs(exp, d, labels[0], m), MARK_NO_AUG, (d, title, labels[0]))
    skip = frozenset(labels[0] for labels, _ in table.rows if labels[0] not in exp.methods)
    _mark_vs_baseline(table, cols, options, marker, skip)
    return table


def _no_aug_runs(exp: Experiment, dataset: str, row: str, metric: str) -> dict:
    """The no-augmentation runs a downstream row pairs with: its method's own records', or for a
    remedy row those of the dataset's records."""
    method = row.split(" + ")[0]
    if method not in exp.methods:  # a remedy on real data alone
        return real_only_entry(exp, dataset, metric + NO_AUG_SUFFIX).runs or {}
    own = {}
    for rec in exp.records(dataset, method):
        own |= runs_of(rec, metric + NO_AUG_SUFFIX)
    return own


def geometry_table(exp: Experiment) -> Table | None:
    """Tab. 2: transport geometry and Bayes-risk reduction of the N(0, I) source and of each method's source."""
    cols = [(d, s, label) for d in exp.datasets for s, label in _geometry_stats(exp, d)]
    if not cols:
        return None
    risk = (
        "; Bayes-risk reduction: how much subclass conditioning lowers the Bayes flow-matching risk (Eq. 2), "
        "for N(0, I) with the induced subclasses of the first method that records one and for each method's "
        "learned source"
        if any(s == BAYES for _, s, _ in cols)
        else ""
    )
    table = Table(
        "geometry",
        "Transport geometry",
        "Directional alignment (higher is better), radial "
        "spread (std and coefficient of variation of path lengths within a subclass) and mean path "
        f"length of source-to-data displacements, per source{risk}{_init_rows_text(exp)}. {RUNS}.",
        ["Source"],
        [Column(label, s in ("alignment", BAYES), group=d) for d, s, label in cols],
    )
    table.add_row(
        ["N(0, I)"], [_first_entry(exp, table, d, _geometry_metric(s, "gauss")) for d, s, _ in cols]
    )
    for method in exp.methods:
        table.add_row([method], [_geometry_entry(exp, table, d, method, s, "method") for d, s, _ in cols])
        if any(
            f"geom_{s}/prior_init" in r.get("metrics", {})
            for r in exp.records(method=method)
            for _, s, _ in cols
        ):
            table.add_row(
                [f"{method} (init)"], [_geometry_entry(exp, table, d, method, s, "init") for d, s, _ in cols]
            )
    return table


def _init_rows_text(exp: Experiment) -> str:
    """The caption's clause on the (init) rows, naming the methods whose records state a learned
    source (`method_info["learned_source"]`); empty when none does."""
    learned = [
        m
        for m in exp.methods
        if any((r.get("method_info") or {}).get("learned_source") for r in exp.records(method=m))
    ]
    return f"; {', '.join(learned)}'s rows before (init) and after source optimisation" if learned else ""


def _geometry_stats(exp: Experiment, dataset: str) -> list[tuple[str, str]]:
    """(stat, title) of the geometry columns a dataset's records support, the Bayes-risk reduction last."""
    stats = [
        (s, metric_title(exp.records(), f"geom_{s}"))
        for s in GEOMETRY
        if has_metric(exp, f"geom_{s}_gauss", dataset) or has_metric(exp, f"geom_{s}", dataset)
    ]
    if any(has_metric(exp, GEOMETRY_ROWS[k][1], dataset) for k in ("gauss", "method")):
        stats.append((BAYES, BAYES_TITLE))
    return stats


def _geometry_metric(stat: str, kind: str) -> str | None:
    """The metric of a geometry column for a row kind (gauss, method, init); None where it has none."""
    stat_metric, risk_metric = GEOMETRY_ROWS[kind]
    return risk_metric if stat == BAYES else stat_metric.format(stat)


def _geometry_entry(exp: Experiment, table: Table, dataset: str, method: str, stat: str, kind: str) -> Entry:
    metric = _geometry_metric(stat, kind)
    return (
        Entry(state=NOT_APPLICABLE) if metric is None else method_entry(exp, table, dataset, method, metric)
    )


def _first_entry(exp: Experiment, table: Table, dataset: str, metric: str) -> Entry:
    """A reference-source metric: runs of the first method that has it (its Bayes-risk reliability marked)."""
    for method in exp.methods:
        runs, used = {}, []
        for rec in exp.records(dataset, method):
            own = runs_of(rec, metric)
            runs |= own
            used += [rec] if own else []
        if runs:
            entry = Entry(runs=runs)
            _mark_unreliable(table, dataset, method, used, metric, entry)
            return entry
    return _absent(exp, dataset)


def confounder_table(exp: Experiment) -> Table | None:
    """Tab. 3: metadata-only probe of the induced subclasses vs a permutation baseline."""

    def methods(e: Experiment) -> list[str]:
        return [m for m in e.methods if _has_any(e, m, "probe_bacc") or not e.records(method=m)]

    built = method_table(
        exp,
        "confounder",
        "Confounder probe",
        runs_caption(
            "Balanced accuracy of a metadata-only logistic regression "
            "predicting the induced subclass (grouped 5-fold CV), its permutation "
            "baseline, the gap (lower: fewer confounders) and the share of classes "
            "at chance."
        ),
        CONFOUNDER,
        methods,
    )
    return None if built is None else built[0]


def _has_any(exp: Experiment, method: str, metric: str) -> bool:
    return any(metric in r.get("metrics", {}) for r in exp.records(method=method))


def all_metrics_table(exp: Experiment, dataset: str) -> Table | None:
    """Every metric of a dataset (no per-class breakdowns), metrics as rows with their direction arrow,
    methods as columns; `<metric>@source` / `@init` as "(source only)" / "(untrained)" lines under
    their plain metric. When the records declare metrics (`metric_info`), a "Label" column beside the
    name gives each one's declared label (a breakdown's: its metric's, with the part)."""
    names: list[str] = []
    for rec in exp.records(dataset):
        for base in (split_variant(m)[0] for m in rec.get("metrics", {})):
            if "/class/" not in base and base not in names:
                names.append(base)
    if not names:
        return None
    methods = exp.methods_of(dataset)
    labelled = bool(declared(exp.records(dataset)))
    table = Table(
        f"all_{dataset}",
        f"All metrics: {dataset}",
        runs_caption("Every metric the records hold (arrows: direction).").replace("column", "row"),
        ["Metric", "Label"] if labelled else ["Metric"],
        [Column(m) for m in methods],
        row_directions=[],
    )
    for name in names:
        for suffix in ("", *VARIANTS):
            metric = name + suffix
            if not has_metric(exp, metric, dataset):
                continue
            higher = direction(exp, metric)
            arrow = "" if higher is None else (" ↑" if higher else " ↓")
            row = [name + arrow + (f" ({VARIANTS[suffix]})" if suffix else "")]
            row += [declared_label(exp.records(dataset), name) or ""] if labelled else []
            trained = not suffix and depends_on_training(metric)
            table.add_row(
                row,
                [method_entry(exp, table, dataset, m, metric, trained, ranked=not suffix) for m in methods],
            )
            table.row_directions.append(higher)
    shown = [v for v in VARIANTS if any(labels[0].endswith(f"({VARIANTS[v]})") for labels, _ in table.rows)]
    if shown:
        refs = " ".join(VARIANT_CAPTIONS[v] for v in shown)
        table.caption = table.caption.replace(RUNS, f"{refs} {REFERENCE_LINES} {RUNS}")
    return table


def depends_on_training(metric: str) -> bool:
    """Whether a metric is computed from the trained network (so a non-converged training matters)."""
    return not metric.startswith(UNTRAINED_PREFIXES) and NO_AUG_SUFFIX not in metric


def significance_table(log: list, options: TableOptions) -> Table | None:
    """Every paired comparison behind the marks: per-seed differences, their mean with its t interval, and p."""
    if not log:
        return None
    level = f"{100 * (1 - options.alpha):g}%"
    table = Table(
        "significance",
        "Paired differences by generative seed",
        "Method minus reference, one difference per generative seed (downstream: classifier seeds "
        f"averaged within each generative seed first), their mean with its {level} Student-t interval "
        f"and the p of the {describe(options.test)} (a mark when p < {options.alpha:g}).",
        ["Table", "Dataset", "Metric", "Method", "vs"],
        [
            Column("n seeds"),
            Column("per-seed differences"),
            Column("mean difference"),
            Column(f"{level} t interval"),
            Column("p"),
        ],
    )
    for name, dataset, column, method, reference, r in log:
        interval = "n/a" if r.low is None else f"[{r.low:+.3g}, {r.high:+.3g}]"
        texts = [
            str(r.n),
            ", ".join(f"{d:+.3g}" for _, d in r.diffs),
            f"{r.mean_diff:+.3g}",
            interval,
            "n/a" if r.p is None else f"{r.p:.3g}",
        ]
        table.add_row([name, dataset, column, method, reference], [Entry(text=t) for t in texts])
    return table
