"""Claim (a)'s rule against random partitions, on plain numbers with known answers, and its section
built from records."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_claims import edit, make_claims, table_rows

from bench.paper.claim_a import MARGIN, PartitionSeed, claim_a, combined_rank_p, partition_verdict
from bench.paper.claim_rules import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED
from bench.report.collect import load_experiment


def seed(s, reduction, random_mean, rank, risk=1.0, r=20):
    return PartitionSeed(s, reduction, risk, random_mean, (1 + rank) / (1 + r), r)


def test_combined_rank_p_is_the_exact_sum_of_ranks_tail():
    """Against brute-force enumeration of three seeds' uniform ranks (R = 4)."""
    seeds = [seed(0, 1, 0, 1, r=4), seed(1, 1, 0, 0, r=4), seed(2, 1, 0, 2, r=4)]
    total = sum(s.rank for s in seeds)
    brute = np.mean([sum(u) <= total for u in itertools.product(range(5), repeat=3)])
    assert combined_rank_p(seeds) == pytest.approx(brute)
    assert combined_rank_p([seed(0, 1, 0, 0)]) == pytest.approx(1 / 21)
    assert combined_rank_p([seed(0, 1, 0, 20)]) == pytest.approx(1.0)


def test_under_the_null_the_rule_holds_at_about_alpha():
    """Ranks uniform (the null): "holds" in about alpha of the trials, not more."""
    rng = np.random.default_rng(0)
    words = [
        partition_verdict(
            [seed(s, 0.10, 0.10 + rng.normal(0, 0.02), int(rng.integers(21))) for s in range(5)]
        ).word
        for _ in range(400)
    ]
    assert words.count(HOLDS) / len(words) < 0.08


def test_induced_above_every_random_partition_holds():
    v = partition_verdict([seed(s, 0.3, 0.05, 0) for s in range(3)])
    assert v.word == HOLDS and v.n == 3 and "combined rank p" in v.why


def test_an_excess_below_the_margin_in_every_seed_does_not_hold():
    seeds = [seed(s, 0.1 + 1e-4 * s, 0.1, rank) for s, rank in enumerate((5, 12, 9, 14, 3, 10))]
    v = partition_verdict(seeds)
    assert v.word == FAILS and f"{100 * MARGIN:g} % margin" in v.why


def test_a_noisy_excess_is_inconclusive_with_its_interval():
    seeds = [seed(0, 0.2, 0.1, 3), seed(1, 0.1, 0.15, 15), seed(2, 0.15, 0.1, 8)]
    v = partition_verdict(seeds)
    assert v.word == INCONCLUSIVE and v.label == "inconclusive at n = 3" and "CI" in v.why
    assert partition_verdict([]).word == NOT_MEASURED
    assert partition_verdict([seed(0, 0.1, 0.1, 10)]).word == INCONCLUSIVE  # one seed cannot show equivalence


def gmm_metrics(seed: int, rank: int) -> dict:
    return {
        "bayes_risk/gmm/standard/reduction": 0.3 + 0.01 * seed,
        "bayes_risk/gmm/standard/reduction_se": 0.01,
        "bayes_risk/gmm/standard/risk_class": 1.5,
        "bayes_risk/gmm/learned/reduction": 0.2,
        "bayes_risk/random/standard/reduction_mean": 0.05,
        "bayes_risk/random/standard/reduction_std": 0.01,
        "bayes_risk/random/standard/p_rank": (1 + rank) / 21,
        "bayes_risk/random/standard/n_partitions": 20.0,
        "bayes_risk/random/standard/excess": 0.25 + 0.01 * seed,
    }


def test_the_section_from_records_counts_the_shared_induction_once(tmp_path):
    folder = make_claims(tmp_path, datasets=("synthetic2d", "digits_lt"))
    for m in ("optprior", "optprior_sub"):
        edit(folder, "synthetic2d", m, lambda rec: rec["metrics"].update(gmm_metrics(rec["seed"], 0)))
        edit(folder, "digits_lt", m, lambda rec: rec["metrics"].update(gmm_metrics(rec["seed"], 10)))
    section = claim_a(load_experiment(folder))
    assert section.verdicts["synthetic2d"].word == HOLDS
    assert section.verdicts["digits_lt"].word == INCONCLUSIVE
    assert section.verdicts["phantom_lt"].word == NOT_MEASURED
    text = "\n".join(section.body)
    rows = table_rows(text, "dataset | method | n")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("synthetic2d", "optprior", "3"),
        ("digits_lt", "optprior", "3"),
    ]
    assert rows[0][-1] == "0.31 ± 0.01 (3/3 seeds reliable)"  # the empirical cross-check, reliable seeds
    per_seed = table_rows(text, "dataset | seed")
    assert len(per_seed) == 6 and per_seed[0][7] == "0.04762 (20)"
