"""The paper's tables, built from an experiment's stored records only (never from live objects).

Tables (each written only when the records hold its metrics):
`datasets` (dataset statistics), `generative` (Tab. 5: FID / IRS, or SWD / coverage for vector
data), `downstream` (Tab. 4: bAcc and macro-F1 with the no-augmentation row), `geometry`
(Tab. 2), `confounder` (Tab. 3), `ablation` (Tab. 7: Sub x Opt with kNN purity) and one
`all_<dataset>` table per dataset with every headline metric (metrics as rows).

Rows and columns follow the experiment config (grid.json). Entries are mean +- sample std over
runs: generative seeds, or generative x classifier seeds for downstream scores (the record's
per-seed details). Significance marks: `*` vs no augmentation, `†` vs the baseline method (vanilla
FM), paired across runs (bench.significance). A grid cell without a usable record is a dash
(or, when only some seeds are missing, a `§` mark) with a note saying what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from bench.collect import OK, Experiment
from bench.significance import compare, min_p
from bench.table import (
    MARK_FM, MARK_NO_AUG, MARK_PARTIAL, MISSING, NOT_APPLICABLE, Column, Entry, Table, mark_best,
)

CHECK = "✓"
NO_AUG_ROW = "no augmentation"
NO_AUG_SUFFIX = "/no_aug"
GENERATIVE = (("fid/tail", "FID tail", "n/fid"), ("fid/pooled", "FID pooled", "n/fid"),
              ("irs_inf/tail", "IRS tail", "n/irs"), ("irs_adjusted/tail", "IRS adj. tail", "n/irs"),
              ("swd/tail", "SWD tail", None), ("coverage/tail", "coverage tail", None))
DOWNSTREAM = (("bacc", "bAcc"), ("macro_f1", "macro-F1"))
GEOMETRY = (("alignment", "alignment"), ("radial_std", "radial std"), ("radial_cv", "radial CV"),
            ("path_length", "path length"))
CONFOUNDER = (("probe_bacc", "bAcc"), ("probe_perm_bacc", "PermbAcc"), ("probe_gap", "gap"),
              ("probe_near_chance", "NearChance"))
ABLATION = (("bacc", "bAcc"), ("knn_purity_gap/features", "kNN gap (features)"),
            ("knn_purity_gap/latent", "kNN gap (latent)"))
# (subclasses, learned source) of the built-in methods, for cells without a record
ABLATION_ROLES = {"fm": (False, False), "optprior_sub": (True, False), "optprior_opt": (False, True),
                  "optprior": (True, True)}


@dataclass(frozen=True)
class TableOptions:
    """Significance settings of a report."""

    test: str = "wilcoxon"
    alpha: float = 0.05
    baseline: str = "fm"  # the method marked against with `†`


def build_tables(exp: Experiment, options: TableOptions = TableOptions()) -> list[Table]:
    """Every table the records support, each with best entries marked."""
    builders: list[Callable[[], Optional[Table]]] = [
        lambda: datasets_table(exp), lambda: generative_table(exp, options),
        lambda: downstream_table(exp, options), lambda: geometry_table(exp),
        lambda: confounder_table(exp), lambda: ablation_table(exp, options),
    ]
    tables = [t for t in (b() for b in builders) if t is not None]
    tables += [t for d in exp.datasets if (t := all_metrics_table(exp, d)) is not None]
    for t in tables:
        mark_best(t)
        runs = _runs_range(t)
        t.caption = t.caption.replace("Mean ± sample std over runs", "No runs" if not runs else
                                      "One run each (no std)" if runs == "1" else f"Mean ± sample std over {runs} runs")
    return tables


def _runs_range(table: Table) -> str:
    """'3' or '3-9': how many runs the table's entries average."""
    ns = sorted({len(e.values) for _, entries in table.rows for e in entries if e.values and e.text is None})
    return "" if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


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


def direction(exp: Experiment, metric: str) -> Optional[bool]:
    """higher_is_better of a metric from the first record that states it, else from grid.json."""
    for rec in exp.records():
        if metric in rec.get("higher_is_better", {}):
            return bool(rec["higher_is_better"][metric])
    for metrics in exp.expected_metrics.values():
        if metric in metrics:
            return bool(metrics[metric])
    return None


def has_metric(exp: Experiment, metric: str, dataset: Optional[str] = None) -> bool:
    """A record holds the metric, or (for a dataset without any usable record) its evaluators
    declare it in grid.json: the column stays, with dashes and a note, when all its cells are lost."""
    if any(metric in r.get("metrics", {}) for r in exp.records(dataset)):
        return True
    return dataset is not None and not exp.records(dataset) and metric in exp.expected_metrics.get(dataset, {})


def method_entry(exp: Experiment, table: Table, dataset: str, method: str, metric: str) -> Entry:
    """Runs of (dataset, method) for `metric` over its seeds; grid problems become marks and notes."""
    cells = exp.results(dataset, method)
    ok = [c for c in cells if c.status == OK]
    bad = [c for c in cells if c.status != OK]
    if not ok:
        table.add_note(f"– {dataset}/{method}: {_seed_notes(bad)}")
        return Entry(state=MISSING)
    runs = {}
    for c in ok:
        runs |= runs_of(c.record, metric)
    if not runs:
        return Entry(state=NOT_APPLICABLE)
    entry = Entry(runs=runs)
    if bad:
        entry.marks += MARK_PARTIAL
        table.add_note(f"§ {dataset}/{method}: mean over {len(ok)} of {len(cells)} seeds; {_seed_notes(bad)}")
    return entry


def _seed_notes(cells: list) -> str:
    """'seed0, seed2: <note>; seed1: <other note>' for unusable cells, grouping equal notes."""
    by_note: dict[str, list[str]] = {}
    for c in cells:
        by_note.setdefault(c.note, []).append(f"seed{c.seed}")
    return "; ".join(f"{', '.join(seeds)}: {note}" for note, seeds in by_note.items())


def no_aug_entry(exp: Experiment, dataset: str, metric: str) -> Entry:
    """The no-augmentation runs of a dataset: every cell retrains them, the first cell of each key wins."""
    runs: dict = {}
    for rec in exp.records(dataset):
        for key, value in runs_of(rec, metric + NO_AUG_SUFFIX).items():
            runs.setdefault(key, value)
    return Entry(runs=runs) if runs else _absent(exp, dataset)


def _absent(exp: Experiment, dataset: str) -> Entry:
    """No runs: missing when the dataset has no usable record at all, else not applicable."""
    return Entry(state=NOT_APPLICABLE if exp.records(dataset) else MISSING)


class Marker:
    """Adds significance marks to entries and writes the table's footnote."""

    def __init__(self, options: TableOptions):
        self.options, self.sizes, self.used, self.key_lengths = options, [], set(), set()

    def mark(self, entry: Entry, reference: dict, symbol: str) -> None:
        if not entry.runs or not reference:
            return
        result = compare(entry.runs, reference, self.options.test, self.options.alpha)
        if result is None:
            return
        self.sizes.append(result.n)
        self.key_lengths.add(len(next(iter(entry.runs))))
        self.used.add(symbol)
        if result.significant:
            entry.marks += symbol

    def footnote(self, table: Table) -> None:
        if not self.sizes:
            return
        what = {MARK_NO_AUG: "no augmentation", MARK_FM: f"{self.options.baseline}"}
        marks = "; ".join(f"{s} differs from {what[s]}" for s in (MARK_NO_AUG, MARK_FM) if s in self.used)
        how = (f"two-sided Wilcoxon signed-rank test, p < {self.options.alpha}" if self.options.test == "wilcoxon"
               else f"paired bootstrap {100 * (1 - self.options.alpha):g}% interval of the mean difference excludes 0")
        by = "generative seed and classifier seed" if 2 in self.key_lengths else "generative seed"
        lo, hi = min(self.sizes), max(self.sizes)
        note = f"{marks} ({how}; runs paired by {by}, {lo if lo == hi else f'{lo}-{hi}'} pair{'' if hi == 1 else 's'})."
        if self.options.test == "wilcoxon" and min(self.sizes) < 6:
            note += (f" With n pairs the smallest possible p is 2/2^n ({min_p(min(self.sizes)):.3g} for "
                     f"n = {min(self.sizes)}): fewer than 6 pairs cannot reach p < 0.05, so a missing mark there "
                     "is not evidence of no difference.")
        table.add_note(note)


def _n_subtitle(exp: Experiment, dataset: str, n_metric: Optional[str]) -> str:
    """'n = 150' (or a range) from the records' sample-count metric."""
    if n_metric is None:
        return ""
    ns = sorted({int(r["metrics"][n_metric]) for r in exp.records(dataset) if n_metric in r.get("metrics", {})})
    if not ns:
        return ""
    return f"n = {ns[0]:,}" if len(ns) == 1 else f"n = {ns[0]:,}-{ns[-1]:,}"


def _runs_caption(what: str) -> str:
    return f"{what} Mean ± sample std over runs; bold: best per column."


# ---- the paper's tables ---------------------------------------------------------------------

def datasets_table(exp: Experiment) -> Optional[Table]:
    """Dataset statistics from each dataset's first usable record."""
    if not exp.records():
        return None
    cols = ["classes", "train", "test", "IR", "ULT", "LT", "MT", "Head", "synthetic"]
    t = Table("datasets", "Datasets", "Training samples, held-out samples, imbalance ratio (largest / "
              "smallest train class), classes per augmentation group and synthetic images planned.",
              ["Dataset"], [Column(c) for c in cols])
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
    return [str(len(rec.get("class_names", []))), f"{sum(counts):,}", f"{rec.get('n', {}).get('test', 0):,}",
            ir, *(str(g) if plan else "n/a" for g in groups), f"{synth:,}" if plan else "n/a"]


def _method_table(exp: Experiment, name: str, title: str, caption: str, specs, methods_for,
                  n_metrics: Optional[dict] = None) -> Optional[tuple[Table, list]]:
    """Methods as rows, (dataset, metric) as columns for every metric present on that dataset."""
    cols = [(d, m, label) for d in exp.datasets for m, label in specs if has_metric(exp, m, d)]
    if not cols:
        return None
    columns = [Column(label, direction(exp, m), _n_subtitle(exp, d, (n_metrics or {}).get(m)), group=d)
               for d, m, label in cols]
    table = Table(name, title, caption, ["Method"], columns)
    for method in methods_for(exp):
        table.add_row([method], [method_entry(exp, table, d, method, m) for d, m, _ in cols])
    return table, cols


def generative_table(exp: Experiment, options: TableOptions) -> Optional[Table]:
    """Tab. 5: generative quality per dataset, vs the baseline method."""
    built = _method_table(exp, "generative", "Generative metrics",
                          _runs_caption("FID (lower is better) and IRS (higher) on domain features at the "
                                        "stated n per column, SWD / subclass coverage for vector data."),
                          [(m, label) for m, label, _ in GENERATIVE], lambda e: e.methods,
                          {m: n for m, _, n in GENERATIVE})
    if built is None:
        return None
    table, cols = built
    _mark_vs_baseline(exp, table, cols, options, Marker(options))
    return table


def _mark_vs_baseline(exp, table: Table, cols: list, options: TableOptions, marker: Marker) -> None:
    """`†` on each non-baseline method entry that differs from the baseline's, then the footnote."""
    base_row = next((entries for labels, entries in table.rows if labels[0] == options.baseline), None)
    if base_row is not None:
        for labels, entries in table.rows:
            if labels[0] not in (options.baseline, NO_AUG_ROW):
                for entry, base in zip(entries, base_row):
                    marker.mark(entry, base.runs, MARK_FM)
    marker.footnote(table)


def downstream_table(exp: Experiment, options: TableOptions) -> Optional[Table]:
    """Tab. 4: balanced accuracy and macro-F1 with the no-augmentation row, marked vs both references."""
    built = _method_table(exp, "downstream", "Downstream classification",
                          _runs_caption("Balanced accuracy and macro-F1 on the held-out split of classifiers "
                                        "trained on real data plus each method's synthetic set (runs: "
                                        "generative seeds x classifier seeds)."),
                          DOWNSTREAM, lambda e: e.methods)
    if built is None:
        return None
    table, cols = built
    table.rows.insert(0, ([NO_AUG_ROW], [no_aug_entry(exp, d, m) for d, m, _ in cols]))
    marker = Marker(options)
    for labels, entries in table.rows[1:]:
        for entry, (d, m, _) in zip(entries, cols):
            own = {}
            for rec in exp.records(d, labels[0]):
                own |= runs_of(rec, m + NO_AUG_SUFFIX)  # paired with the cell's own baseline runs
            marker.mark(entry, own, MARK_NO_AUG)
    _mark_vs_baseline(exp, table, cols, options, marker)
    return table


def geometry_table(exp: Experiment) -> Optional[Table]:
    """Tab. 2: transport geometry of the N(0, I) source and of each method's source."""
    cols = [(d, s, label) for d in exp.datasets for s, label in GEOMETRY
            if has_metric(exp, f"geom_{s}_gauss", d) or has_metric(exp, f"geom_{s}", d)]
    if not cols:
        return None
    table = Table("geometry", "Transport geometry", "Directional alignment (higher is better), radial "
                  "spread (std and coefficient of variation of path lengths within a subclass) and mean path "
                  "length of source-to-data displacements, per source; optprior's rows before (init) and after "
                  "source optimisation.", ["Source"],
                  [Column(label, s == "alignment", group=d) for d, s, label in cols])
    table.add_row(["N(0, I)"], [_first_entry(exp, d, f"geom_{s}_gauss") for d, s, _ in cols])
    for method in exp.methods:
        table.add_row([method], [method_entry(exp, table, d, method, f"geom_{s}") for d, s, _ in cols])
        if any(f"geom_{s}/prior_init" in r.get("metrics", {}) for r in exp.records(method=method) for _, s, _ in cols):
            table.add_row([f"{method} (init)"],
                          [method_entry(exp, table, d, method, f"geom_{s}/prior_init") for d, s, _ in cols])
    return table


def _first_entry(exp: Experiment, dataset: str, metric: str) -> Entry:
    """A method-independent metric (the reference source): runs of the first method that has it."""
    for method in exp.methods:
        runs = {}
        for rec in exp.records(dataset, method):
            runs |= runs_of(rec, metric)
        if runs:
            return Entry(runs=runs)
    return _absent(exp, dataset)


def confounder_table(exp: Experiment) -> Optional[Table]:
    """Tab. 3: metadata-only probe of the induced subclasses vs a permutation baseline."""
    def methods(e: Experiment) -> list[str]:
        return [m for m in e.methods if _has_any(e, m, "probe_bacc") or not e.records(method=m)]

    built = _method_table(exp, "confounder", "Confounder probe",
                          _runs_caption("Balanced accuracy of a metadata-only logistic regression predicting "
                                        "the induced subclass (grouped 5-fold CV), its permutation baseline, the "
                                        "gap (lower: fewer confounders) and the share of classes at chance."),
                          CONFOUNDER, methods)
    return None if built is None else built[0]


def _has_any(exp: Experiment, method: str, metric: str) -> bool:
    return any(metric in r.get("metrics", {}) for r in exp.records(method=method))


def ablation_table(exp: Experiment, options: TableOptions) -> Optional[Table]:
    """Tab. 7: Sub x Opt ablation rows with downstream bAcc and kNN purity gaps."""
    roles = {m: r for m in exp.methods if (r := _ablation_role(exp, m)) is not None}
    if len(roles) < 2 or not any(has_metric(exp, m) for m, _ in ABLATION):
        return None
    built = _method_table(exp, "ablation", "Ablation: subclasses (Sub.) and optimised sources (Opt.)",
                          _runs_caption("Downstream balanced accuracy and the kNN purity gap of induced "
                                        "subclasses over random partitions, in feature and latent space."),
                          ABLATION, lambda e: list(roles))
    if built is None:
        return None
    table, cols = built
    table.row_header = ["Method", "Sub.", "Opt."]
    table.rows = [([labels[0]] + [CHECK if on else "" for on in roles[labels[0]]], entries)
                  for labels, entries in table.rows]
    return table


def _ablation_role(exp: Experiment, method: str) -> Optional[tuple[bool, bool]]:
    for rec in exp.records(method=method):
        info = rec.get("method_info") or {}
        if "subclasses" in info:
            return bool(info["subclasses"]), bool(info.get("learned_source"))
    return ABLATION_ROLES.get(method)


def all_metrics_table(exp: Experiment, dataset: str) -> Optional[Table]:
    """Every headline metric of a dataset (no per-class breakdowns), metrics as rows, methods as columns."""
    names: list[str] = []
    for rec in exp.records(dataset):
        names += [n for n in rec.get("metrics", {}) if "/class/" not in n and n not in names]
    if not names:
        return None
    methods = exp.methods_of(dataset)
    table = Table(f"all_{dataset}", f"All metrics: {dataset}",
                  _runs_caption("Every metric the records hold (arrows: direction).").replace("column", "row"),
                  ["Metric"], [Column(m) for m in methods], row_directions=[])
    for name in names:
        higher = direction(exp, name)
        arrow = "" if higher is None else (" ↑" if higher else " ↓")
        table.add_row([name + arrow], [method_entry(exp, table, dataset, m, name) for m in methods])
        table.row_directions.append(higher)
    return table
