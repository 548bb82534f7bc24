"""`bench field`: optprior next to the field's other answers, judged from the records of the
`field` experiment (gin/experiments/field.gin), written to docs/field.md.

Three questions, answered per dataset with the generative seed as the unit of replication:

- (a) does an optimised source (optprior) beat an optimised coupling (otcfm)?
- (b) does flow matching's linear path (fm) beat a diffusion path (vpfm) at equal budget? The
  budget each record states (backbone and its parameters, steps x batch, solver, NFE) is shown
  per method and compared for fm and vpfm.
- (c) does a generative method beat MixUp / CutMix on the real data alone (`bacc` against
  `bacc/mixup`, `bacc/cutmix`), and does a generative method + MixUp (`bacc/aug+mixup`) beat
  either?

(a) and (b) are judged on each dataset's primary tail metric (the claims report's: tail FID on
image data, tail SWD on vector data) with the claims report's paired test and its one-sided
p-values (bench.paper.claim_rules.tested); (c) on bAcc with the claims report's question (e)
rule (`any_beats_verdict`: some candidate better at p < alpha / k). Every number is a record field
or arithmetic on record fields; nothing is recomputed. The machinery is the claims report's
(records, rules, provenance), reused, not copied.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from bench.errors import BenchError
from bench.metrics.significance import (
    POWER,
    check_test,
    compare,
    describe,
    min_p,
    seeds_for_power,
    seeds_needed,
)
from bench.paper.claim_bootstrap import replication_lines
from bench.paper.claim_experiments import load_claims
from bench.paper.claim_records import (
    DASH,
    arrow,
    as_runs,
    higher_is_better,
    holds_metric,
    md_table,
    mean_std,
    n_caption,
    per_seed,
    seed_values,
)
from bench.paper.claim_rules import (
    Verdict,
    any_beats_verdict,
    better,
    effect_text,
    fails,
    floor_note,
    holds,
    holm_family,
    inconclusive,
    not_measured,
    number,
    tested,
)
from bench.paper.claim_section import Section
from bench.paper.claims import NO_AUG, PRIMARY_C, ClaimsOptions, primary_metric, real_only_values
from bench.paper.claims_provenance import commands, grid_lines, provenance_lines, regenerate_lines
from bench.report.collect import Experiment
from bench.report.summary import AUG_PREFIX, remedies_in, unconverged
from bench.store.artifacts import write_text_atomic

FIELD_METHODS = ("fm", "otcfm", "vpfm", "cpd", "cbfm", "optprior")
FIELD_DATASETS = ("synthetic2d", "digits_lt")
DOCUMENT = Path("docs/field.md")
TAIL_LABELS = {"fid/tail": "FID tail", "swd/tail": "SWD tail"}
DOWNSTREAM = "bacc"
REFERENCES = ("mixup", "cutmix")  # (c)'s classical augmentations on the real data alone
COMBINED = "mixup"  # (c)'s remedy on top of each method's synthetic set
# (key, title, statement, the method judged, its reference)
PAIRS = (
    (
        "a",
        "an optimised source beats an optimised coupling",
        "optprior (optimised subclass sources, independent coupling) has a better primary tail metric than "
        "otcfm (N(0, I) source, minibatch optimal-transport coupling within each class).",
        "optprior",
        "otcfm",
    ),
    (
        "b",
        "flow matching beats a diffusion path at equal budget",
        "fm (the linear path) has a better primary tail metric than vpfm (the variance-preserving "
        "diffusion path) on the same backbone, steps, sampler and NFE.",
        "fm",
        "vpfm",
    ),
)
# what the records must agree on for (b)'s "equal budget": (label, how to read it from a record)
BUDGET = (
    ("backbone", lambda r: r.get("backbone")),
    ("parameters", lambda r: (r.get("train") or {}).get("n_parameters")),
    ("steps", lambda r: (r.get("train") or {}).get("steps")),
    ("batch", lambda r: (r.get("train") or {}).get("batch_size")),
    ("solver", lambda r: (r.get("sampler") or {}).get("solver")),
    ("NFE", lambda r: (r.get("sampler") or {}).get("nfe")),
)


# ---- what the records must hold ------------------------------------------------------------------


def primary(exp: Experiment, dataset: str) -> tuple[str, str] | None:
    """(metric, label) of the dataset's primary tail metric (tail FID on image data, else tail SWD)."""
    return primary_metric(
        [(m, TAIL_LABELS[m]) for m in PRIMARY_C if holds_metric(exp, dataset, m)], PRIMARY_C
    )


def check_field(exp: Experiment, command: str) -> None:
    """One line naming what is missing: a method a question needs, a dataset without a primary tail
    metric, a dataset with classifiers but without MixUp / CutMix runs."""
    for method in dict.fromkeys(m for *_, ours, ref in PAIRS for m in (ours, ref)):
        if method not in exp.methods:
            raise BenchError(
                f"{exp.folder}: no {method} cell in the records or grid.json, and the field report "
                f"compares it; run the field experiment first: `{command}`"
            )
    for d in exp.datasets:
        if primary(exp, d) is None:
            raise BenchError(
                f"{exp.folder}: {d} holds neither `fid/tail` nor `swd/tail`, the primary metrics of "
                f"(a) and (b); run it with the fid or swd evaluator: `{command}`"
            )
        if holds_metric(exp, d, DOWNSTREAM):
            needed = [f"{DOWNSTREAM}/{r}" for r in REFERENCES] + [f"{DOWNSTREAM}/{AUG_PREFIX}{COMBINED}"]
            absent = [m for m in needed if not holds_metric(exp, d, m)]
            if absent:
                raise BenchError(
                    f"{exp.folder}: {d} has classifiers but no {', '.join(f'`{m}`' for m in absent)}; (c) needs "
                    f"downstream.remedies with {' and '.join(REFERENCES)} (and downstream.combine_augmentations "
                    f"left True, which also runs {COMBINED} on the synthetic set): `{command}`"
                )


# ---- (a), (b): one method against one reference -----------------------------------------------------


def pair_verdict(ours: str, ref: str, t, options: ClaimsOptions) -> Verdict:
    """`ours` against `ref` on one dataset: does not hold when ref is better at one-sided p < alpha,
    holds when ours is, else inconclusive at n with the effect, its interval and the n it needs."""
    if t is None:
        return not_measured(f"no generative seed holds both {ours} and {ref}")
    c, alpha = t.comparison, options.alpha
    if t.adj_worse < alpha:
        return fails(c.n, f"{ref} better than {ours} at one-sided p = {number(t.adj_worse)} < {alpha:g}")
    if t.adj_better < alpha:
        return holds(c.n, f"{ours} better than {ref} at one-sided p = {number(t.adj_better)} < {alpha:g}")
    return inconclusive(
        c.n,
        effect_text(ref, c, alpha, options.test) + floor_note(options.test, c.nonzero, alpha, one_sided=True),
    )


def pair_rows(label: str, ref: str, t, higher: bool) -> list[list[str]]:
    """The comparison's row: per-seed differences, mean [t interval], both one-sided p, t-test p."""
    if t is None:
        return [[label, ref, "0", DASH, DASH, DASH, DASH, DASH, "no paired seeds"]]
    c = t.comparison
    interval = f" [{number(c.low)}, {number(c.high)}]" if c.low is not None else ""
    return [
        [
            label,
            ref,
            str(c.n),
            per_seed(dict(c.diffs)),
            f"{number(c.mean_diff)}{interval}",
            f"{t.adj_better:.3g}",
            f"{t.adj_worse:.3g}",
            "undefined" if c.t_p is None else f"{c.t_p:.3g}",
            f"{sum(better(d, higher) for _, d in c.diffs)}/{c.n}",
        ]
    ]


def pair_question(exp: Experiment, spec: tuple, options: ClaimsOptions) -> Section:
    """(a) or (b): per dataset, `ours` paired with `ref` by generative seed on the primary tail metric."""
    key, title, statement, ours, ref = spec
    verdicts, body = {}, []
    for d in exp.datasets:
        metric, label = primary(exp, d)
        c = compare(
            as_runs(seed_values(exp, d, ours, metric)),
            as_runs(seed_values(exp, d, ref, metric)),
            options.test,
            options.alpha,
        )
        t = None if c is None else holm_family({d: tested(c, higher_is_better(exp, metric))})[d]
        verdicts[d] = pair_verdict(ours, ref, t, options)
        body += [f"#### {d}", ""]
        body += budget_statement(exp, d, ours, ref) if key == "b" else []
        body += md_table(
            [
                "metric",
                "reference",
                "n",
                f"per-seed difference ({ours} − {ref})",
                "mean difference [t interval]",
                f"p {ours} better",
                f"p {ref} better",
                "t-test p (two-sided)",
                f"{ours} better in",
            ],
            pair_rows(f"{label} {arrow(exp, metric)}", ref, t, higher_is_better(exp, metric)),
        )
        body += [verdict_line(verdicts[d]), ""]
    rule = (
        f"Per dataset, on its primary tail metric (tail FID on image data, tail SWD on vector data), "
        f"{ours} is paired with {ref} by generative seed: one difference {ours} − {ref} per seed. The test is "
        f"the claims report's, the {describe(options.test).replace('two-sided ', '')}, read one-sided in each "
        f"direction. **holds**: {ours} better at one-sided p < {options.alpha:g}; **does not hold**: {ref} "
        f"better at one-sided p < {options.alpha:g}; otherwise **inconclusive at n = N**, with the observed "
        f"effect, its t interval and the seeds that effect would need for {100 * POWER:g} % power. Each "
        "dataset is its own question (no correction across datasets)."
    )
    return Section(key, title, statement, rule, verdicts, body, trained=True)


def budget_statement(exp: Experiment, dataset: str, ours: str, ref: str) -> list[str]:
    """Whether the records of `ours` and `ref` state the same budget (backbone, steps, sampler, NFE)."""
    a, b = budget_values(exp.records(dataset, ours)), budget_values(exp.records(dataset, ref))
    if not a or not b:
        return ["Equal budget: not checked (a method has no record here).", ""]
    differ = [label for label, _ in BUDGET if a[label] != b[label]]
    if differ:
        return [
            "**Not at equal budget**: the records differ in "
            + ", ".join(f"{x} ({a[x]} vs {b[x]})" for x in differ)
            + ".",
            "",
        ]
    same = ", ".join(f"{label} {a[label]}" for label, _ in BUDGET)
    return [f"Equal budget, as every record of {ours} and {ref} here states: {same}.", ""]


def budget_values(records: list[dict]) -> dict[str, str]:
    """{budget item: its value, or every value the records state joined by ' / '} ({} for no records)."""
    if not records:
        return {}
    out = {}
    for label, read in BUDGET:
        seen = list(dict.fromkeys(str(read(r)) for r in records))
        out[label] = " / ".join(seen)
    return out


# ---- (c): generative augmentation against MixUp / CutMix --------------------------------------------


def augmentation_question(exp: Experiment, options: ClaimsOptions) -> list[Section]:
    """(c1)-(c4): every method alone, then every method + MixUp, against MixUp and against CutMix."""
    out = []
    for suffix in ("", f"/{AUG_PREFIX}{COMBINED}"):
        for ref in REFERENCES:
            key = f"c{len(out) + 1}"
            verdicts, body = {}, []
            for d in exp.datasets:
                verdicts[d], more = beats_reference(exp, d, suffix, ref, options)
                body += more
            what = "a generative method" + (
                "" if not suffix else f" with {COMBINED} on top of its synthetic set"
            )
            out.append(
                Section(
                    key,
                    f"{what} beats {ref} on the real data alone",
                    "A classifier trained with some method's synthetic images"
                    + ("" if not suffix else f" and {COMBINED}")
                    + f" has a better balanced accuracy than one trained with {ref} on the real data alone.",
                    augmentation_rule(ref, options),
                    verdicts,
                    body,
                    trained=True,
                )
            )
    return out


def beats_reference(exp: Experiment, dataset: str, suffix: str, ref: str, options: ClaimsOptions):
    """(verdict, body) of one dataset: each method's bAcc (+ suffix) paired with `bacc/<ref>`."""
    if not holds_metric(exp, dataset, DOWNSTREAM):
        return None, [f"#### {dataset}", "", "Out of scope: no downstream classifiers (vector data).", ""]
    reference = real_only_values(exp, dataset, f"{DOWNSTREAM}/{ref}")
    name = f"{ref} (real data only)"
    higher, rows, results = higher_is_better(exp, DOWNSTREAM), [], {}
    candidates = {
        m + (f" + {COMBINED}" if suffix else ""): seed_values(exp, dataset, m, DOWNSTREAM + suffix)
        for m in exp.methods_of(dataset)
    }
    candidates = {k: v for k, v in candidates.items() if v}
    k = max(len(candidates), 1)
    for cand, values in candidates.items():
        c = results[cand] = compare(as_runs(values), as_runs(reference), options.test, options.alpha)
        if c is not None:
            rows.append(candidate_row(cand, c, higher, options, k))
    verdict = any_beats_verdict(results, name, higher, options.test, options.alpha)
    body = [
        f"#### {dataset}",
        "",
        f"Candidate − {name} per paired generative seed ({describe(options.test)}; a candidate counts at "
        f"p < {options.alpha:g} / {k}; n for {100 * POWER:g} % power at that level from the observed effect):",
        "",
        *md_table(
            [
                "candidate",
                "n",
                "per-seed difference",
                "mean difference [t interval]",
                "p",
                "candidate better in",
                "n needed",
            ],
            rows,
        ),
        verdict_line(verdict),
        "",
    ]
    return verdict, body


def candidate_row(name: str, c, higher: bool, options: ClaimsOptions, k: int) -> list[str]:
    """One candidate against the reference: differences, mean [t interval], p, seeds it would need."""
    interval = f" [{number(c.low)}, {number(c.high)}]" if c.low is not None else ""
    need = seeds_for_power(c.mean_diff, c.sd, options.alpha / k, exact=options.test != "ttest")
    return [
        name,
        str(c.n),
        per_seed(dict(c.diffs)),
        f"{number(c.mean_diff)}{interval}",
        "undefined" if c.p is None else f"{c.p:.3g}",
        f"{sum(better(d, higher) for _, d in c.diffs)}/{c.n}",
        DASH if need is None else str(need),
    ]


def augmentation_rule(ref: str, options: ClaimsOptions) -> str:
    return (
        f"The claims report's question (e) rule with {ref} on the real data alone (`bacc/{ref}`, the classifiers "
        "shared by every method's cell of a seed) as the reference: every candidate is paired with it by "
        f"generative seed (one difference per seed of the records' mean over classifier seeds) and tested with the "
        f"{describe(options.test)}. **holds**: some candidate better in the mean with p < {options.alpha:g} / k, "
        "k the number of candidates (Bonferroni), the best such named; **does not hold**: the reference better "
        "than every candidate in every paired seed; otherwise **inconclusive at n = N**."
    )


# ---- tables -------------------------------------------------------------------------------------------


def metric_columns(exp: Experiment, dataset: str) -> list[tuple[str, str]]:
    """(metric, label) columns of a dataset's score table: its primary tail metric, then bAcc,
    bAcc with MixUp and with CutMix on top of the synthetic set, where held."""
    cols = [primary(exp, dataset)]
    cols += [
        (m, label)
        for m, label in (
            (DOWNSTREAM, "bAcc"),
            *((f"{DOWNSTREAM}/{AUG_PREFIX}{r}", f"bAcc + {r}") for r in REFERENCES),
        )
        if holds_metric(exp, dataset, m)
    ]
    return cols


def score_lines(exp: Experiment, dataset: str) -> list[str]:
    """Mean ± sample std per method (the field's six first), then the classifiers on real data alone."""
    cols = metric_columns(exp, dataset)
    methods = [m for m in FIELD_METHODS if m in exp.methods] + [
        m for m in exp.methods if m not in FIELD_METHODS
    ]
    values = {(m, metric): seed_values(exp, dataset, m, metric) for m in methods for metric, _ in cols}
    n = max([len(v) for v in values.values()] + [0])
    rows = [[m, *(mean_std(values[(m, metric)].values(), n) for metric, _ in cols)] for m in methods]
    lines = [
        f"#### {dataset}",
        "",
        f"Mean ± sample std over {n_caption([len(v) for v in values.values()])}.",
        "",
        *md_table(["method", *(f"{label} {arrow(exp, metric)}" for metric, label in cols)], rows),
    ]
    if not holds_metric(exp, dataset, DOWNSTREAM):
        return lines
    alone, _ = remedies_in(exp.records(dataset))
    real = {NO_AUG: real_only_values(exp, dataset, f"{DOWNSTREAM}/no_aug")}
    real |= {r: real_only_values(exp, dataset, f"{DOWNSTREAM}/{r}") for r in alone}
    return lines + [
        "Classifiers trained on the real data alone (shared by every method's cell of a seed):",
        "",
        *md_table(
            ["real data only", f"bAcc {arrow(exp, DOWNSTREAM)}"],
            [[name, mean_std(v.values(), n)] for name, v in real.items()],
        ),
    ]


def budget_lines(exp: Experiment) -> list[str]:
    """Per dataset and method, the budget its records state and how many cells converged."""
    rows = []
    for d in exp.datasets:
        for m in exp.methods_of(d):
            records = exp.records(d, m)
            b = budget_values(records)
            if b:
                stalled = len(unconverged(records))
                rows.append(
                    [d, m, *(b[label] for label, _ in BUDGET), f"{len(records) - stalled}/{len(records)}"]
                )
    return [
        "What each method's records state (a value per distinct setting across its seeds); converged: cells "
        'whose smoothed training loss changed by less than the threshold over the last window (`record["train"]'
        '["convergence"]`).',
        "",
        *md_table(["dataset", "method", *(label for label, _ in BUDGET), "converged"], rows),
    ]


# ---- the document ---------------------------------------------------------------------------------------


def verdict_line(v: Verdict | None) -> str:
    if v is None:
        return "- n/a (out of scope)"
    return f"- **{v.label}**" + (f" ({v.why})" if v.why and v.why not in v.label else "")


def limits_lines(exp: Experiment, options: ClaimsOptions) -> list[str]:
    """What n generative seeds can show with the exact test, said plainly, with the n needed."""
    ns = [len({int(r["seed"]) for r in exp.records(d)}) for d in exp.datasets if exp.records(d)]
    n = min(ns) if ns else 0
    k = len(exp.methods)
    one, two = min_p(n, two_sided=False), min_p(n)
    return [
        f"**What n = {n} allows.** The unit of replication is the generative seed (n = {n} per cell at the "
        f"least). With the exact sign-flip test, (a) and (b) read one-sided: the smallest attainable p is "
        f"1/2^{n} = {one:.3g}"
        + (
            f" ≥ {options.alpha:g}, so no answer can be **holds** (nor its reverse) at alpha {options.alpha:g}, "
            "however large and consistent the effect"
            if one >= options.alpha
            else ""
        )
        + f"; p < {options.alpha:g} needs at least {seeds_needed(options.alpha, two_sided=False)} seeds. (c) is "
        f"two-sided with Bonferroni over its k = {k} candidates: its floor is 2/2^{n} = {two:.3g} and "
        f"p < {options.alpha:g}/{k} needs at least {seeds_needed(options.alpha / k)} seeds. So the document shows "
        "each seed's difference, the mean with its t interval, and per comparison the seeds its observed effect "
        f"would need for {100 * POWER:g} % power; an inconclusive answer is not evidence of no difference.",
        "",
    ]


def answer_lines(exp: Experiment, sections: list[Section]) -> list[str]:
    """One row per question: its answer per dataset."""
    rows = [
        [
            f"({s.key}) {s.title}",
            *(DASH if s.verdicts.get(d) is None else s.verdicts[d].label for d in exp.datasets),
        ]
        for s in sections
    ]
    return md_table(["question", *exp.datasets], rows)


def field_document(exp: Experiment, results: Path, out: Path, options: ClaimsOptions) -> tuple[str, list]:
    """The whole Markdown document and its sections."""
    runs, command = field_commands(results, out, options, tuple(exp.parts))
    check_field(exp, runs[0])
    sections = [pair_question(exp, spec, options) for spec in PAIRS] + augmentation_question(exp, options)
    lines = [
        "# The field's other answers: optimised coupling, diffusion path, classical augmentation",
        "",
        f"Generated on {date.today().isoformat()} by `{command}`.",
        "",
        "Generated from the stored records of the `field` experiment (gin/experiments/field.gin) alone; every "
        "number is a record field or arithmetic on record fields. **This is not the paper's protocol**: it is "
        "CPU-sized (the budgets below: a tiny backbone, a few hundred training steps, a small CNN downstream), "
        "so it says how the methods compare at this budget on the embedded data, not on the paper's benchmarks.",
        "",
        *regenerate_lines(runs),
        *provenance_lines(exp),
        # the claims report's line on its bootstrap intervals is left out: this document draws none
        *(line for line in replication_lines(exp) if not line.startswith("The bootstrap intervals")),
        "",
        *limits_lines(exp, options),
        "## Answers",
        "",
        *answer_lines(exp, sections),
        "## Grid",
        "",
        *grid_lines(exp, FIELD_METHODS, tuple(d for d in FIELD_DATASETS if d in exp.datasets)),
        "## Budget",
        "",
        *budget_lines(exp),
        "## Scores",
        "",
        *(line for d in exp.datasets for line in score_lines(exp, d)),
    ]
    for s in sections:
        lines += [
            f"## ({s.key}) {s.title}",
            "",
            f"**Statement.** {s.claim}",
            "",
            f"**Rule.** {s.rule}",
            "",
            *s.body,
        ]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n", sections


def field_commands(results: Path, out: Path, options: ClaimsOptions, parts: tuple) -> tuple[list[str], str]:
    """(the commands that rerun the experiment, the `bench field` command that writes this document)."""
    *runs, _ = commands(results, out, options.test, options.alpha, parts)
    flags = (f" --test {options.test}" if options.test != "permutation" else "") + (
        f" --alpha {options.alpha:g}" if options.alpha != 0.05 else ""
    )
    return runs, f"bench field {Path(results).as_posix()} --out {Path(out).as_posix()}{flags}"


def write_field(results: Path, out: Path, options: ClaimsOptions | None = None) -> tuple[Path, list]:
    """Write the field report of the records under `results` to `out` atomically; returns it and its sections."""
    options = options or ClaimsOptions()
    check_test(options.test)
    if not 0.0 < options.alpha < 1.0:
        raise BenchError(f"--alpha must be between 0 and 1, got {options.alpha}")
    exp = load_claims(Path(results))
    text, sections = field_document(exp, Path(results), Path(out), options)
    write_text_atomic(Path(out), text)
    return Path(out), sections
