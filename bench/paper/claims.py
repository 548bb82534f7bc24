"""`bench claims`: the paper's four claims, and whether generative augmentation beats the cheap
long-tail remedies at all, judged from stored records.

The records are one experiment folder or a folder of several (the claims protocol's
claims_prior, claims_vectors, claims_images: bench.paper.claim_experiments.load_claims). The
document (docs/claims.md by default) holds, for each claim ((a) bench.paper.claim_a, (b)
bench.paper.claim_b, (c), (d1), (d2) and question (e) here), the claim in one sentence, a verdict
per dataset and overall, the tables the verdict rests on (mean ± sample std over generative
seeds, n stated; per-seed values where the rule is per seed) and the rule that decided it
(bench.paper.claim_rules). Then what a seed varies, training adequacy, the Sub x Opt ablation,
links to the figures `bench report` drew, the commands that regenerate everything, the commits
and the wall time of the records. Nothing is recomputed except (d)'s bootstrap intervals, from the
predictions the records store. A partial grid is fine: missing cells are listed and verdicts use
what exists ("not measured" where nothing does). A hand-written analysis block survives
regeneration (bench.paper.claims_provenance, `analysis`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from bench.errors import BenchError
from bench.metrics.significance import POWER, check_test, compare, describe
from bench.paper.ablation import ABLATION_ROLES
from bench.paper.claim_a import claim_a
from bench.paper.claim_b import claim_b
from bench.paper.claim_bootstrap import bootstrap_lines, replication_lines
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
    seed_differences,
    seed_values,
)
from bench.paper.claim_rules import (
    NOT_MEASURED,
    Verdict,
    any_beats_verdict,
    better,
    comparison_verdict,
    holm_family,
    not_measured,
    number,
    tested,
)
from bench.paper.claim_section import CLAIM_DATASETS, Section, datasets_of
from bench.paper.claims_provenance import (
    ANALYSIS_END,
    ANALYSIS_START,
    adequacy_lines,
    analysis_block,
    commands,
    figure_lines,
    grid_lines,
    part_figure_lines,
    provenance_lines,
    regenerate_lines,
    unconverged_datasets,
)
from bench.report.collect import Experiment
from bench.report.summary import AUG_PREFIX, remedies_in
from bench.store.artifacts import write_text_atomic

OURS = "optprior"
BASELINES = ("fm", "cbfm", "cpd")
NO_AUG = "no augmentation"
# the claims experiment's grid (gin/experiments/claims.gin): reported as missing when not run
CLAIM_METHODS = ("fm", "cbfm", "cpd", "optprior", "optprior_sub", "optprior_opt")
TAIL = (("fid/tail", "FID tail"), ("irs_inf/tail", "IRS∞ tail"), ("swd/tail", "SWD tail"))
DOWNSTREAM = (("bacc", "bAcc"), ("macro_f1", "macro-F1"))
LABELS = dict(TAIL + DOWNSTREAM)
HEADLINE_TAIL = ("fid/tail", "swd/tail")  # the ablation's tail metric: image data, else vector data
PRIMARY_C = (
    HEADLINE_TAIL  # (c)'s pre-registered primary metric: tail FID on image data, tail SWD on vector data
)
PRIMARY_D = ("bacc",)  # (d1), (d2): bAcc; macro-F1 is reported, not voted
PRIMARY_TESTS = {
    "permutation": "exact sign-flip permutation test of the mean paired difference",
    "ttest": "paired t-test",
    "wilcoxon": "exact Wilcoxon signed-rank test",
}
ABLATION = ("fm", "optprior_sub", "optprior_opt", "optprior")
SOURCE = "@source"
UNCONVERGED = "‡"
CHECK = "✓"
DOCUMENT = Path("docs/claims.md")  # `bench claims --out`'s default: the document the analysis is kept in


@dataclass(frozen=True)
class ClaimsOptions:
    """The paired test of claims (c) and (d) and its level."""

    test: str = "permutation"
    alpha: float = 0.05


COMBINE_RULE = (
    "The overall verdict combines the datasets' (a (c)/(d) dataset's verdict is its primary metric's): "
    "**does not hold** when any does not hold (a counterexample), **holds** when every measured one holds, "
    "**not measured** when none is measured, otherwise **inconclusive**."
)


def in_scope(exp: Experiment, dataset: str, metrics) -> bool:
    """The dataset can measure one of `metrics` (a dataset with nothing recorded may: not measured)."""
    known = bool(exp.records(dataset)) or bool(exp.expected_metrics.get(dataset))
    return not known or any(holds_metric(exp, dataset, m) for m in metrics)


# ---- claims (c), (d): optprior against references --------------------------------------------------


def no_aug_values(exp: Experiment, dataset: str, metric: str) -> dict[int, float]:
    """{seed: no-augmentation score} (`real_only_values` of `<metric>/no_aug`)."""
    return real_only_values(exp, dataset, metric + "/no_aug")


def real_only_values(exp: Experiment, dataset: str, metric: str) -> dict[int, float]:
    """{seed: score} of a classifier trained without synthetic data (`<metric>/no_aug`,
    `<metric>/<remedy>`): optprior's own record of the seed first (the pairing), else the first
    method's (every cell of a seed holds the same shared classifiers)."""
    out: dict[int, float] = {}
    for m in [OURS] + [m for m in exp.methods if m != OURS]:
        for s, v in seed_values(exp, dataset, m, metric).items():
            out.setdefault(s, v)
    return out


def reference_values(exp: Experiment, dataset: str, metric: str, ref: str) -> dict[int, float]:
    return no_aug_values(exp, dataset, metric) if ref == NO_AUG else seed_values(exp, dataset, ref, metric)


def score_rows(exp: Experiment, dataset: str, metrics: list, no_aug: bool, sources: bool) -> list[list[str]]:
    """Every method's mean ± std (and its source-only line), after the no-augmentation row when asked."""
    ran = exp.methods_of(dataset)
    methods = ran + [m for m in CLAIM_METHODS if m not in ran]  # never-run methods: a dash, see the grid
    n = max([len(seed_values(exp, dataset, m, metric)) for m in methods for metric, _ in metrics] + [0])
    rows = (
        [[NO_AUG, *(mean_std(no_aug_values(exp, dataset, m).values(), n) for m, _ in metrics)]]
        if no_aug
        else []
    )
    for method in methods:
        rows.append(
            [method, *(mean_std(seed_values(exp, dataset, method, m).values(), n) for m, _ in metrics)]
        )
        source = [seed_values(exp, dataset, method, m + SOURCE) for m, _ in metrics]
        if sources and any(source):
            rows.append([f"{method} (source only)", *(mean_std(v.values(), n) for v in source)])
    return rows


def comparisons(exp: Experiment, dataset: str, metric: str, refs: tuple, options: ClaimsOptions) -> dict:
    """{reference: Tested or None}: optprior paired with each reference on one metric (None: no pairs)."""
    ours, higher, out = seed_values(exp, dataset, OURS, metric), higher_is_better(exp, metric), {}
    for ref in refs:
        c = (
            compare(
                as_runs(ours),
                as_runs(reference_values(exp, dataset, metric, ref)),
                options.test,
                options.alpha,
            )
            if ours
            else None
        )
        out[ref] = None if c is None else tested(c, higher)
    return out


def comparison_rows(label: str, results: dict, higher: bool, primary: bool) -> list[list[str]]:
    """One row per reference: per-seed differences, mean [t interval], the one-sided p-values
    (Holm-adjusted in brackets on the primary metric), the t-test's two-sided p and the seed count."""
    rows, name = [], f"{label} (primary)" if primary else label
    for ref, t in results.items():
        if t is None:
            rows.append([name, ref, "0", DASH, DASH, DASH, DASH, DASH, "no paired seeds"])
            continue
        c = t.comparison
        interval = f" [{number(c.low)}, {number(c.high)}]" if c.low is not None else ""
        p_better, p_worse = (
            f"{p:.3g}" + (f" (Holm {adj:.3g})" if primary else "")
            for p, adj in ((t.p_better, t.adj_better), (t.p_worse, t.adj_worse))
        )
        rows.append(
            [
                name,
                ref,
                str(c.n),
                per_seed(dict(c.diffs)),
                f"{number(c.mean_diff)}{interval}",
                p_better,
                p_worse,
                "undefined" if c.t_p is None else f"{c.t_p:.3g}",
                f"{sum(better(d, higher) for _, d in c.diffs)}/{c.n}",
            ]
        )
    return rows


def flow_rows(exp: Experiment, dataset: str, metrics: list) -> list[list[str]]:
    """Per method (optprior, fm): mean ± std over seeds of metric - metric@source, what the flow adds."""
    rows = []
    for method in (OURS, "fm"):
        diffs = [
            seed_differences(
                seed_values(exp, dataset, method, m), seed_values(exp, dataset, method, m + SOURCE)
            )
            for m, _ in metrics
        ]
        if any(diffs):
            rows.append([method, *(mean_std(d.values()) for d in diffs)])
    return rows


def primary_metric(metrics: list, primaries: tuple) -> tuple[str, str] | None:
    """The pre-registered primary metric among a dataset's (metric, label) pairs: the first of `primaries` held."""
    return next(((m, label) for p in primaries for m, label in metrics if m == p), None)


def comparison_section(
    exp: Experiment,
    dataset: str,
    metrics: list,
    results: dict,
    primary: tuple,
    verdict: Verdict,
    no_aug: bool,
) -> list[str]:
    """One dataset of claim (c), (d1) or (d2): scores, paired comparisons, what the flow adds, verdict."""
    header = [f"{label} {arrow(exp, m)}" for m, label in metrics]
    scores = score_rows(exp, dataset, metrics, no_aug, sources=not no_aug)
    counts = [len(seed_values(exp, dataset, m, metric)) for m in exp.methods for metric, _ in metrics]
    source = (
        ""
        if no_aug
        else '; "(source only)": the method\'s source draws decoded with no flow (`<metric>@source`)'
    )
    body = [
        f"#### {dataset}",
        "",
        f"Mean ± sample std over {n_caption(counts)}{source}.",
        "",
        *md_table(["method", *header], scores),
    ]
    rows = [
        row
        for metric, label in metrics
        for row in comparison_rows(
            label, results[metric], higher_is_better(exp, metric), metric == primary[0]
        )
    ]
    body += [
        "optprior − reference per paired generative seed (mean difference with its t interval; one-sided p "
        "of the primary test that optprior is better and that the reference is better, Holm-adjusted over "
        "the claim's family on the primary metric; the t-test's two-sided p as a cross-check):",
        "",
    ]
    body += md_table(
        [
            "metric",
            "reference",
            "n",
            "per-seed difference",
            "mean difference [t interval]",
            "p optprior better",
            "p reference better",
            "t-test p",
            "optprior better in",
        ],
        rows,
    )
    flows = flow_rows(exp, dataset, metrics) if not no_aug else []
    if flows:
        body += [
            "What the flow adds: metric − metric@source per seed, mean ± sample std (for ↓ metrics a "
            "negative value means the flow improves on its own source draws):",
            "",
        ]
        body += md_table(["method", *header], flows)
    others = [label for m, label in metrics if m != primary[0]]
    body += [
        f"- {primary[1]} (primary): **{verdict.label}**"
        + (f" ({verdict.why})" if verdict.why and verdict.why not in verdict.label else "")
    ]
    return body + ([f"- {', '.join(others)}: reported, not voted"] if others else []) + [""]


def comparison_claim(
    exp: Experiment, options: ClaimsOptions, specs: tuple, refs: tuple, no_aug: bool, primaries: tuple
) -> tuple[list[str], dict]:
    """Body and per-dataset verdicts of a claim judged on each dataset's primary metric, the p-values
    Holm-adjusted over every (dataset, reference) comparison of the claim."""
    body, verdicts, found = {}, {}, {}
    for d in datasets_of(exp):
        metrics = [(m, label) for m, label in specs if holds_metric(exp, d, m)]
        primary = primary_metric(metrics, primaries)
        if not in_scope(exp, d, [m for m, _ in specs]):
            verdicts[d] = None
            body[d] = [f"#### {d}", "", "Out of scope: its evaluators record none of these metrics.", ""]
        elif primary is None:
            verdicts[d], body[d] = (
                not_measured(),
                [
                    f"#### {d}",
                    "",
                    "Not measured: no usable record of its primary "
                    f"metric ({' or '.join(f'`{m}`' for m in primaries)}).",
                    "",
                ],
            )
        else:
            found[d] = (metrics, primary, {m: comparisons(exp, d, m, refs, options) for m, _ in metrics})
    family = holm_family(
        {
            (d, ref): t
            for d, (_, primary, results) in found.items()
            for ref, t in results[primary[0]].items()
            if t is not None
        }
    )
    for d, (metrics, primary, results) in found.items():
        results[primary[0]] = {ref: family.get((d, ref)) for ref in results[primary[0]]}
        verdicts[d] = comparison_verdict(results[primary[0]], len(family), options.test, options.alpha)
        body[d] = comparison_section(exp, d, metrics, results, primary, verdicts[d], no_aug)
    return [line for d in verdicts for line in body[d]], verdicts


def comparison_rule(refs: str, primaries: str, options: ClaimsOptions) -> str:
    level = f"{options.alpha:g}"
    return (
        f"Pre-registered primary metric per dataset: {primaries}; the other metrics are reported, never voted, "
        f"and a dataset's verdict is its primary metric's. On it, optprior is paired by generative seed with each "
        f"reference ({refs}): one difference optprior − reference per seed. The primary test is the "
        f"{PRIMARY_TESTS[options.test]}, one-sided in each direction"
        + (
            " (exact: it assumes only that under the null each seed's difference is as likely negative as "
            "positive, which a handful of seeds cannot check for normality; the t-test's two-sided p is a "
            "column, not a second verdict)"
            if options.test == "permutation"
            else ""
        )
        + f". The p-values of every (dataset, reference) comparison of the claim are Holm-adjusted as one family, "
        f"each direction on its own. **does not hold**: some reference is better than optprior at adjusted "
        f"p < {level} (named); **holds**: optprior is better than every reference at adjusted p < {level}; "
        "otherwise **inconclusive at n = N**, with each undecided reference's mean paired difference, its "
        f"{100 * (1 - options.alpha):g} % t interval and the n that observed effect would need for "
        f"{100 * POWER:g} % power (paired t-test power at d_z = mean / sd, at {level} / K for a family of K, "
        "Holm's strictest step; never fewer than the seeds whose exact one-sided floor 1/2^n is below that "
        "level: 3 seeds give 0.125, so no claim of this kind can be decided either way with 3 seeds). A zero "
        "difference has no sign and is dropped by the exact test."
    )


def claim_c(exp: Experiment, options: ClaimsOptions) -> Section:
    """optprior gives the best tail FID / IRS (vector data: tail SWD), judged on tail FID / tail SWD."""
    body, verdicts = comparison_claim(exp, options, TAIL, BASELINES, no_aug=False, primaries=PRIMARY_C)
    rule = comparison_rule(
        ", ".join(BASELINES),
        "tail FID (`fid/tail`) on image data, tail SWD (`swd/tail`) on vector data",
        options,
    )
    return Section(
        "c",
        "optprior gives the best tail FID / IRS",
        "optprior's synthetic tail classes have the best FID and IRS of all methods (on vector data: the "
        "best tail sliced Wasserstein distance).",
        rule,
        verdicts,
        body,
        trained=True,
    )


DOWNSTREAM_NOTE = (
    " Each seed's score is the record's plain metric: the mean over its classifier seeds, which share "
    "one synthetic set; the unit is the generative seed."
)


def test_set_intervals(exp: Experiment, verdicts: dict, refs, alpha: float) -> list[str]:
    """Per measured dataset, the seed-level interval next to the bootstrap over seeds and test images
    (bench.paper.claim_bootstrap) for optprior against `refs(dataset)`; shown, not voted."""
    return [
        line
        for d, v in verdicts.items()
        if v is not None and v.word != NOT_MEASURED and refs(d)
        for line in bootstrap_lines(exp, d, refs(d), alpha)
    ]


def claim_d1(exp: Experiment, options: ClaimsOptions) -> Section:
    """optprior's synthetic images beat no augmentation in bAcc (image data)."""
    body, verdicts = comparison_claim(exp, options, DOWNSTREAM, (NO_AUG,), no_aug=True, primaries=PRIMARY_D)
    body += test_set_intervals(exp, verdicts, lambda d: (NO_AUG,), options.alpha)
    rule = (
        comparison_rule(
            f"{NO_AUG}: the `<metric>/no_aug` of optprior's own record of the seed", "bAcc (`bacc`)", options
        )
        + DOWNSTREAM_NOTE
    )
    return Section(
        "d1",
        "optprior beats no augmentation",
        "A classifier trained with optprior's synthetic images has a better balanced accuracy than one "
        "trained on the real data alone.",
        rule,
        verdicts,
        body,
        trained=True,
    )


def claim_d2(exp: Experiment, options: ClaimsOptions) -> Section:
    """optprior gives the best bAcc of the generative methods (image data)."""
    body, verdicts = comparison_claim(exp, options, DOWNSTREAM, BASELINES, no_aug=True, primaries=PRIMARY_D)
    body += test_set_intervals(
        exp, verdicts, lambda d: tuple(m for m in BASELINES if m in exp.methods_of(d)), options.alpha
    )
    rule = comparison_rule(", ".join(BASELINES), "bAcc (`bacc`)", options) + DOWNSTREAM_NOTE
    return Section(
        "d2",
        "optprior is the best method in bAcc / macro-F1",
        "A classifier trained with optprior's synthetic images has the best balanced accuracy and "
        "macro-F1 of all generative methods.",
        rule,
        verdicts,
        body,
        trained=True,
    )


# ---- question (e): generative augmentation against the cheap remedies ------------------------------


def candidates(
    exp: Experiment, dataset: str, metric: str, combined: list[str]
) -> dict[str, dict[int, float]]:
    """{name: {seed: score}} of every generative method, then each method + remedy on its synthetic set."""
    out = {m: seed_values(exp, dataset, m, metric) for m in exp.methods_of(dataset)}
    out |= {
        f"{m} + {r}": seed_values(exp, dataset, m, f"{metric}/{AUG_PREFIX}{r}")
        for m in exp.methods_of(dataset)
        for r in combined
    }
    return {name: values for name, values in out.items() if values}


def remedy_section(
    exp: Experiment, dataset: str, alone: list[str], combined: list[str], options: ClaimsOptions
) -> tuple[list[str], Verdict]:
    """One dataset of question (e): every score, the best remedy, each candidate against it."""
    metric, label = DOWNSTREAM[0]
    remedies = {r: real_only_values(exp, dataset, f"{metric}/{r}") for r in alone}
    best = max(remedies, key=lambda r: sum(remedies[r].values()) / max(len(remedies[r]), 1))
    scored = {
        NO_AUG: no_aug_values(exp, dataset, metric),
        **{f"{r} (real data only)": v for r, v in remedies.items()},
        **candidates(exp, dataset, metric, combined),
    }
    macro = {
        NO_AUG: no_aug_values(exp, dataset, "macro_f1"),
        **{f"{r} (real data only)": real_only_values(exp, dataset, f"macro_f1/{r}") for r in alone},
        **candidates(exp, dataset, "macro_f1", combined),
    }
    n = max(len(v) for v in scored.values())
    body = [
        f"#### {dataset}",
        "",
        f"Mean ± sample std over {n_caption([len(v) for v in scored.values()])}.",
        "",
        *md_table(
            ["classifier", f"{label} {arrow(exp, metric)}", f"macro-F1 {arrow(exp, 'macro_f1')}"],
            [
                [name, mean_std(v.values(), n), mean_std(macro.get(name, {}).values(), n)]
                for name, v in scored.items()
            ],
        ),
    ]
    higher, rows, results = higher_is_better(exp, metric), [], {}
    for name, values in candidates(exp, dataset, metric, combined).items():
        c = results[name] = compare(as_runs(values), as_runs(remedies[best]), options.test, options.alpha)
        if c is not None:
            interval = f" [{number(c.low)}, {number(c.high)}]" if c.low is not None else ""
            rows.append(
                [
                    name,
                    str(c.n),
                    per_seed(dict(c.diffs)),
                    f"{number(c.mean_diff)}{interval}",
                    "undefined" if c.p is None else f"{c.p:.3g}",
                    f"{sum(better(d, higher) for _, d in c.diffs)}/{c.n}",
                ]
            )
    body += [
        f"Best remedy by mean {label}: **{best}** (chosen on these same test scores, which favours the "
        f"remedy). Candidate − {best} per paired generative seed ({describe(options.test)}; a candidate "
        f"counts at p < {options.alpha:g} / {len(rows)}):",
        "",
        *md_table(
            [
                "candidate",
                "n",
                "per-seed difference",
                "mean difference [t interval]",
                "p",
                "candidate better in",
            ],
            rows,
        ),
    ]
    verdict = any_beats_verdict(results, f"{best} (real data only)", higher, options.test, options.alpha)
    return body + [
        f"- {label}: **{verdict.label}**" + (f" ({verdict.why})" if verdict.why else ""),
        "",
    ], verdict


def claim_e(exp: Experiment, options: ClaimsOptions) -> Section:
    """Does any generative method (alone or with a remedy) beat the best cheap long-tail remedy?"""
    body, verdicts = [], {}
    for d in datasets_of(exp):
        alone, combined = remedies_in(exp.records(d))
        if not in_scope(exp, d, ["bacc"]):
            verdicts[d] = None
            body += [f"#### {d}", "", "Out of scope: no downstream classifiers (vector data).", ""]
        elif not alone or not candidates(exp, d, "bacc", combined):
            verdicts[d] = not_measured("no remedy runs (downstream.remedies) or no method's bAcc")
            body += [
                f"#### {d}",
                "",
                "Not measured: no record holds both a remedy's and a method's bAcc.",
                "",
            ]
        else:
            more, verdicts[d] = remedy_section(exp, d, alone, combined, options)
            body += more
    rule = (
        f"Per dataset, the remedy with the best mean bAcc on real data alone is the reference; every generative "
        f"method, and every method + remedy on its synthetic set, is paired with it by generative seed (one "
        f"difference per seed of the records' mean over classifier seeds) and tested with the "
        f"{describe(options.test)}. **holds**: some candidate is better in the mean with p < {options.alpha:g} / k, "
        "k the number of candidates (Bonferroni: any one of them may win), the best such named; **does not "
        "hold**: the best remedy is better than every candidate in every paired seed; otherwise "
        "**inconclusive at n = N**. Choosing the best remedy on the same test scores favours the remedies."
    )
    return Section(
        "e",
        "Generative augmentation beats the best cheap remedy",
        "A classifier trained with some method's synthetic images (alone or with a long-tail remedy) has "
        "a better balanced accuracy than the best classical remedy (re-weighting, re-sampling, focal loss, "
        "LDAM-DRW, cRT) trained on the real data alone.",
        rule,
        verdicts,
        body,
        trained=True,
    )


# ---- ablation ----------------------------------------------------------------------------------


def ablation_lines(exp: Experiment) -> list[str]:
    """The Sub x Opt ablation: headline tail metric and bAcc per dataset, mean ± std over seeds."""
    cols = []
    for d in exp.datasets:
        tail = next((m for m in HEADLINE_TAIL if holds_metric(exp, d, m)), None)
        cols += [(d, m) for m in (tail, "bacc") if m is not None and holds_metric(exp, d, m)]
    if not cols:
        return ["No record holds a tail metric or bAcc.", ""]
    rows = [
        [
            m,
            *(CHECK if r else "" for r in ABLATION_ROLES[m]),
            *(mean_std(seed_values(exp, d, m, metric).values()) for d, metric in cols),
        ]
        for m in ABLATION
    ]
    header = [
        "method",
        "Sub.",
        "Opt.",
        *(f"{d}: {LABELS[metric]} {arrow(exp, metric)}" for d, metric in cols),
    ]
    return [
        "Mean ± sample std over the generative seeds each cell has; Sub.: subclass conditioning, Opt.: "
        "optimised sources.",
        "",
        *md_table(header, rows),
    ]


# ---- the document --------------------------------------------------------------------------------


def verdict_text(section: Section, dataset: str, qualified: list[str]) -> str:
    """A dataset's verdict label, with ‡ when unconverged training qualifies it."""
    v = section.verdicts.get(dataset)
    if v is None:
        return "n/a (out of scope)"
    return v.label + (f" {UNCONVERGED}" if section.trained and dataset in qualified else "")


def overall_text(section: Section, qualified: list[str]) -> str:
    """The overall verdict label, with ‡ when unconverged training qualifies a dataset's verdict behind it."""
    behind = [d for d, v in section.verdicts.items() if v is not None and v.word != NOT_MEASURED]
    mark = section.trained and any(d in qualified for d in behind)
    return section.overall.label + (f" {UNCONVERGED}" if mark else "")


def glance_lines(exp: Experiment, sections: list[Section]) -> list[str]:
    """One row per claim: its verdict per dataset and overall."""
    qualified, datasets = unconverged_datasets(exp), datasets_of(exp)
    rows = [
        [
            f"({s.key}) {s.title}",
            *(verdict_text(s, d, qualified) for d in datasets),
            overall_text(s, qualified),
        ]
        for s in sections
    ]
    note = (
        [f"{UNCONVERGED}: training did not converge in some cell of the dataset (see Training adequacy)."]
        if qualified
        else []
    )
    return [
        *md_table(["claim", *datasets, "overall"], rows),
        COMBINE_RULE,
        "",
        *note,
        *([""] if note else []),
    ]


def section_lines(exp: Experiment, s: Section) -> list[str]:
    """A claim's section: sentence, verdicts, rule, tables."""
    qualified = unconverged_datasets(exp)
    lines = [
        f"## Claim ({s.key}): {s.title}",
        "",
        f"**Claim.** {s.claim}",
        "",
        f"**Verdict: {overall_text(s, qualified)}** ({s.overall.why}).",
        "",
    ]
    lines += [
        f"- {d}: **{verdict_text(s, d, qualified)}**"
        + (f" ({v.why})" if v is not None and v.why and v.why not in verdict_text(s, d, qualified) else "")
        for d, v in s.verdicts.items()
    ]
    return lines + ["", f"**Rule.** {s.rule}", "", *s.body]


def claims_document(exp: Experiment, results: Path, out: Path, options: ClaimsOptions) -> tuple[str, list]:
    """The whole Markdown document and its sections."""
    sections = [
        claim_a(exp),
        claim_b(exp),
        claim_c(exp, options),
        claim_d1(exp, options),
        claim_d2(exp, options),
        claim_e(exp, options),
    ]
    *runs, claims_command = commands(results, out, options.test, options.alpha, tuple(exp.parts))
    lines = [
        f"# The paper's four claims and the remedies question, measured (experiment `{exp.name}`)",
        "",
        f"Generated on {date.today().isoformat()} by `{claims_command}`.",
        "",
        *analysis(results, out),
        "",
        "Hand-written analysis belongs between the two markers above: `bench claims` copies it unchanged "
        f"from the file it rewrites, else from `{DOCUMENT.as_posix()}` when that was generated from the same "
        "records folder. Everything else is generated from the stored records alone; every number is a record field "
        "or arithmetic on record fields.",
        "",
        *regenerate_lines(runs),
        *provenance_lines(exp),
        *replication_lines(exp),
        "",
        "## Verdicts",
        "",
        *glance_lines(exp, sections),
        "## Grid",
        "",
        *grid_lines(exp, CLAIM_METHODS, CLAIM_DATASETS),
    ]
    for s in sections:
        lines += section_lines(exp, s)
    lines += [
        "## Training adequacy",
        "",
        *adequacy_lines(exp),
        "## Ablation (Sub x Opt)",
        "",
        *ablation_lines(exp),
        "## Figures",
        "",
        *(
            part_figure_lines(results, exp.parts)
            if exp.parts
            else figure_lines(Path(results) / "report", Path(out).parent, exp.datasets)
        ),
    ]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n", sections


def analysis(results: Path, out: Path) -> list[str]:
    """The hand-written analysis block of the file rewritten; where that has none (a fresh `--out`), the
    block of DOCUMENT when its "Generated on" line names the same records folder, so `bench claims
    results/claims --out X` on a fresh clone writes the committed document (results/ holds records only)."""
    own = analysis_block(out)
    if own != [ANALYSIS_START, ANALYSIS_END] or not DOCUMENT.is_file():
        return own
    generated = f"by `bench claims {Path(results).as_posix()} "
    head = DOCUMENT.read_text(encoding="utf-8").split("\n", 4)[:4]
    return (
        analysis_block(DOCUMENT)
        if any(line.startswith("Generated on ") and generated in line for line in head)
        else own
    )


def write_claims(results: Path, out: Path, options: ClaimsOptions = ClaimsOptions()) -> tuple[Path, list]:
    """Write the claims report of an experiment folder to `out` atomically; returns it and its sections."""
    check_test(options.test)
    if not 0.0 < options.alpha < 1.0:
        raise BenchError(f"--alpha must be between 0 and 1, got {options.alpha}")
    exp = load_claims(Path(results))
    text, sections = claims_document(exp, Path(results), Path(out), options)
    write_text_atomic(Path(out), text)
    return Path(out), sections
