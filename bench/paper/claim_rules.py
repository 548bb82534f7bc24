"""The verdict rules of the claims report (docs/reports.md, "The claims report"), on per-seed numbers.

A verdict is one of "holds", "does not hold", "inconclusive at n = N" (or inconclusive for a stated
reason, e.g. an unreliable Monte-Carlo estimate) and "not measured" (no data behind it). The rules
take plain per-seed values, never records, so each can be tested on numbers whose answer is known:

- claims (a) and (b) have rules of their own: `bench.paper.claim_a.partition_verdict` (the induced
  subclasses against size-matched random partitions) and `bench.paper.claim_b.geometry_verdict`
  (the optimised sources against their initialisation).
- `comparison_verdict` (claims c, d1, d2), on one pre-registered primary metric per dataset: a
  reference better than optprior at one-sided p < alpha after Holm's correction over the claim's
  family of comparisons: does not hold; optprior better than every reference, each Holm-adjusted
  p < alpha: holds; otherwise inconclusive at n, with each observed effect, its interval and the
  seeds it would need for 80 % power. (`Tested`, `holm_family` orient and adjust the p-values.)
- `any_beats_verdict` (question e): some candidate better than the best remedy at p < alpha / k.
- `combine`: one verdict from several (metrics of a dataset, datasets of a claim).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bench.metrics.significance import POWER, Comparison, holm, min_p, seeds_for_power, seeds_needed

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"


@dataclass(frozen=True)
class Verdict:
    """A verdict word, the label shown for it, the seeds behind it and why it was reached."""

    word: str
    label: str
    n: int = 0  # generative seeds behind it (0: none, or not limited by n)
    why: str = ""


def holds(n: int, why: str) -> Verdict:
    return Verdict(HOLDS, HOLDS, n, why)


def fails(n: int, why: str) -> Verdict:
    return Verdict(FAILS, FAILS, n, why)


def inconclusive(n: int, why: str) -> Verdict:
    """Inconclusive for lack of seeds: more of them could decide it."""
    return Verdict(INCONCLUSIVE, f"inconclusive at n = {n}", n, why)


def not_measured(why: str = "no record holds the metrics it rests on") -> Verdict:
    return Verdict(NOT_MEASURED, NOT_MEASURED, 0, why)


def number(value: float | None) -> str:
    """4 significant digits, the precision of every number in the claims report ("n/a" for None)."""
    return "n/a" if value is None else f"{value:.4g}"


# ---- claims (c), (d): optprior against references ----------------------------------------------


def better(diff: float, higher_is_better: bool) -> bool:
    """A difference (optprior - reference) in optprior's favour."""
    return diff > 0 if higher_is_better else diff < 0


@dataclass(frozen=True)
class Tested:
    """One comparison of a claim's family: optprior - reference per paired seed, with the primary test's
    one-sided p that optprior is better (`p_better`) and that the reference is better (`p_worse`),
    each Holm-adjusted over the claim's family (`adj_better`, `adj_worse`)."""

    comparison: Comparison
    p_better: float
    p_worse: float
    adj_better: float = 1.0
    adj_worse: float = 1.0


def tested(c: Comparison, higher_is_better: bool) -> Tested:
    """The one-sided p-values of a comparison, oriented by the metric's direction (None: 1)."""
    up, down = (1.0 if p is None else p for p in (c.p_greater, c.p_less))
    return Tested(c, *((up, down) if higher_is_better else (down, up)))


def holm_family(family: dict) -> dict:
    """{key: Tested} with `adj_better` and `adj_worse` Holm-adjusted over every member of the family
    (each direction its own family: "holds" rests on one, "does not hold" on the other)."""
    better_adj = holm({k: t.p_better for k, t in family.items()})
    worse_adj = holm({k: t.p_worse for k, t in family.items()})
    return {k: replace(t, adj_better=better_adj[k], adj_worse=worse_adj[k]) for k, t in family.items()}


def comparison_verdict(
    results: dict[str, Tested | None], family_size: int, test: str, alpha: float
) -> Verdict:
    """One dataset's verdict on its primary metric from its references' Holm-adjusted tests.

    Does not hold: some reference better than optprior, Holm-adjusted one-sided p < alpha (named).
    Holds: optprior better than every measured reference, each Holm-adjusted one-sided p < alpha.
    Otherwise inconclusive at n, with each undecided reference's observed effect, its interval and
    the seeds that effect would need for 80 % power at alpha / family_size (Holm's strictest step)."""
    done = {ref: t for ref, t in results.items() if t is not None}
    absent = [ref for ref, t in results.items() if t is None]
    if not done:
        return not_measured("no paired seeds with any reference")
    n = min(t.comparison.n for t in done.values())
    missing = f"; not measured against {', '.join(absent)}" if absent else ""
    family = f"Holm over {family_size} comparison{'s' if family_size != 1 else ''}"
    beaten = {ref: t for ref, t in done.items() if t.adj_worse < alpha}
    if beaten:
        named = ", ".join(f"{ref} (p = {number(t.adj_worse)})" for ref, t in beaten.items())
        return fails(n, f"better than optprior at one-sided p < {alpha:g}, {family}: {named}{missing}")
    if all(t.adj_better < alpha for t in done.values()):
        return holds(
            n, f"better than {', '.join(done)} at one-sided p < {alpha:g} against each, {family}{missing}"
        )
    open_ = {ref: t for ref, t in done.items() if t.adj_better >= alpha}
    level = alpha / family_size
    parts = [effect_text(ref, t.comparison, level, test) for ref, t in open_.items()]
    return inconclusive(
        n,
        "; ".join(parts)
        + floor_note(test, min(t.comparison.nonzero for t in open_.values()), level, one_sided=True)
        + missing,
    )


def effect_text(ref: str, c: Comparison, level: float, test: str) -> str:
    """The observed effect against `ref`, its interval, and the seeds it would need for 80 % power."""
    interval = f" [{number(c.low)}, {number(c.high)}]" if c.low is not None else ""
    need = seeds_for_power(c.mean_diff, c.sd, level, exact=test != "ttest")
    power = (
        f"this effect needs n = {need} for {100 * POWER:g} % power at one-sided {level:.3g}"
        if need is not None
        else "no n sizes it (no effect, or one seed)"
    )
    return f"vs {ref}: mean difference {number(c.mean_diff)}{interval}, {power}"


def floor_note(test: str, n: int, level: float, one_sided: bool) -> str:
    """A sentence when n nonzero differences cannot reach `level` with an exact test at all."""
    floor = min_p(n, two_sided=not one_sided)
    if test == "ttest" or floor < level:
        return ""
    return (
        f"; with n = {n} nonzero paired differences the exact {'one' if one_sided else 'two'}-sided p cannot go "
        f"below {'1' if one_sided else '2'}/2^{n} = {floor:.3g} >= {level:.3g}: at least "
        f"{seeds_needed(level, two_sided=not one_sided)} seeds are needed"
    )


def any_beats_verdict(
    comparisons: dict[str, Comparison | None], reference: str, higher_is_better: bool, test: str, alpha: float
) -> Verdict:
    """Holds when some candidate beats `reference` in the mean paired difference with p below alpha
    divided by the number of candidates (Bonferroni: any one of k may win, so each is held to
    alpha / k), the best such named; does not hold when the reference beats every candidate in every
    paired seed. The seed floor it states is the one for alpha / k, the level the p is held to."""
    done = {name: c for name, c in comparisons.items() if c is not None}
    if not done:
        return not_measured(f"no paired seeds with {reference}")
    n, level = min(c.n for c in done.values()), alpha / len(done)
    winners = [
        name
        for name, c in done.items()
        if better(c.mean_diff, higher_is_better) and c.p is not None and c.p < level
    ]
    if winners:
        best = max(winners, key=lambda name: done[name].mean_diff * (1 if higher_is_better else -1))
        return holds(
            done[best].n,
            f"{best} better than {reference} in the mean and p < {alpha:g}/{len(done)} "
            f"(Bonferroni over {len(done)} candidates)",
        )
    if all(all(better(-d, higher_is_better) for _, d in c.diffs) for c in done.values()):
        return fails(n, f"{reference} better than every generative candidate in every paired seed")
    return inconclusive(n, floor_text(test, min(c.nonzero for c in done.values()), level, len(done)))


def floor_text(test: str, n: int, level: float, k: int = 1) -> str:
    """What n nonzero paired differences can show with `test` at `level` (alpha / k): its smallest
    attainable two-sided p, and the seeds that level needs, said plainly."""
    floor, held = min_p(n), f"{level:.3g}" + (f" (alpha / {k})" if k > 1 else "")
    if test == "ttest":
        return (
            f"the t-test has no floor on p, but with n = {n} it rests on {max(n - 1, 0)} degree(s) of freedom; "
            f"the exact sign-flip test could not go below 2/2^{n} = {floor:.3g}"
        )
    if floor >= level:
        return (
            f"with n = {n} nonzero paired differences the smallest p the exact test can give is 2/2^{n} = "
            f"{floor:.3g} >= {held}: no candidate can be confirmed with {n} seeds (p < {held} needs at "
            f"least {seeds_needed(level)})"
        )
    return f"with n = {n} nonzero paired differences the smallest attainable exact p is 2/2^{n} = {floor:.3g}"


# ---- several verdicts into one -------------------------------------------------------------------


def combine(verdicts: dict[str, Verdict]) -> Verdict:
    """One verdict from named ones: does not hold if any does not hold (a counterexample), holds if
    every measured one holds, not measured if none is, else inconclusive."""
    measured = {k: v for k, v in verdicts.items() if v.word != NOT_MEASURED}
    unmeasured = [k for k, v in verdicts.items() if v.word == NOT_MEASURED]
    if not measured:
        return not_measured(f"not measured on {', '.join(verdicts) or 'any dataset'}")
    rest = f"; not measured on {', '.join(unmeasured)}" if unmeasured else ""
    by_word = {w: [k for k, v in measured.items() if v.word == w] for w in (HOLDS, FAILS, INCONCLUSIVE)}
    if by_word[FAILS]:
        return fails(_fewest(measured, by_word[FAILS]), f"does not hold on {', '.join(by_word[FAILS])}{rest}")
    if not by_word[INCONCLUSIVE]:
        return holds(_fewest(measured, by_word[HOLDS]), f"holds on {', '.join(by_word[HOLDS])}{rest}")
    limited = [measured[k].n for k in by_word[INCONCLUSIVE] if measured[k].n > 0]
    why = (
        f"inconclusive on {', '.join(by_word[INCONCLUSIVE])}"
        + (f"; holds on {', '.join(by_word[HOLDS])}" if by_word[HOLDS] else "")
        + rest
    )
    if limited:
        return inconclusive(min(limited), why)
    reasons = "; ".join(f"{k}: {measured[k].why}" for k in by_word[INCONCLUSIVE])
    return Verdict(INCONCLUSIVE, f"inconclusive ({reasons})", 0, why)


def _fewest(verdicts: dict[str, Verdict], keys: list[str]) -> int:
    """The fewest seeds behind the named verdicts."""
    return min(verdicts[k].n for k in keys)
