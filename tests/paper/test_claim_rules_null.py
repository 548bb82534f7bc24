"""The (c)/(d) verdicts are tests: under a true null they rarely refute, with a large effect they confirm.

Fixtures go through the record path `bench claims` reads (record.json + grid.json, loaded by
`load_experiment`) and are judged in-process by `claim_c`, `claim_d1`, `claim_d2`. Every method's
metrics (and the no-augmentation score) in a null fixture are drawn from ONE distribution, with a
shared per-seed effect, so any "does not hold" is a false refutation. Plus Holm, the power n and the
zero-difference handling of the exact tests against independent computations.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_claims import make_record, write

from bench.metrics.significance import (
    Comparison,
    holm,
    min_p,
    nonzero,
    seeds_for_power,
    seeds_needed,
    sign_flip_p,
    wilcoxon_p,
)
from bench.paper.claim_rules import FAILS, HOLDS, INCONCLUSIVE, any_beats_verdict
from bench.paper.claims import ClaimsOptions, claim_c, claim_d1, claim_d2
from bench.report.collect import load_experiment
from bench.store.gridfile import GridFile

# dataset names and seeds the other claims tests do not use; the method and primary metric names are
# the ones the claims report is pre-registered on (fm, cbfm, cpd, optprior; fid/tail, swd/tail, bacc)
IMAGES, VECTORS = ("lesions_lt", "retina_lt"), ("rings3d",)
METHODS = ("fm", "cbfm", "cpd", "optprior")
SEED0 = 4101
DECLARED = {
    "fid/tail": False,
    "irs_inf/tail": True,
    "bacc": True,
    "macro_f1": True,
    "bacc/no_aug": True,
    "macro_f1/no_aug": True,
    "swd/tail": False,
}
CLAIMS = {"c": claim_c, "d1": claim_d1, "d2": claim_d2}


def draw(rng: np.random.Generator, dataset: str, seed_shift: float, edge: float) -> dict:
    """One cell's metrics: a shared per-seed shift plus independent noise; `edge` in optprior's favour."""
    if dataset in VECTORS:
        return {"swd/tail": 1.0 + seed_shift - edge + rng.normal(0, 0.05)}
    bacc = 0.6 + seed_shift / 10 + edge / 10 + rng.normal(0, 0.01)
    return {
        "fid/tail": 50.0 + 10 * seed_shift - 10 * edge + rng.normal(0, 1.0),
        "irs_inf/tail": 0.3 + rng.normal(0, 0.02),
        "bacc": bacc,
        "macro_f1": bacc - 0.05 + rng.normal(0, 0.01),
        "bacc/no_aug": 0.6 + seed_shift / 10 + rng.normal(0, 0.01),
        "macro_f1/no_aug": 0.55 + seed_shift / 10 + rng.normal(0, 0.01),
    }


def fixture(root: Path, stream: int, n_seeds: int, edge: float = 0.0) -> Path:
    """An experiment folder with grid.json and one record per (dataset, method, seed); optprior is
    better by `edge` noise standard deviations (0: the null, every method from one distribution)."""
    rng, folder, grid = np.random.default_rng([stream, n_seeds]), root / f"null{stream}", GridFile("claims")
    for d in IMAGES + VECTORS:
        for s in range(SEED0, SEED0 + n_seeds):
            shift = rng.normal(0, 0.1)
            for m in METHODS:
                metrics = draw(rng, d, shift, edge * (m == "optprior"))
                grid.add(
                    d, m, s, f"h-{d}-{m}-{s}", metrics={k: v for k, v in DECLARED.items() if k in metrics}
                )
                record = make_record(d, m, s, metrics)
                record["higher_is_better"] = {k: v for k, v in DECLARED.items() if k in metrics}
                write(folder, record)
    (folder / "grid.json").write_text(json.dumps(grid.to_json()))
    return folder


def verdicts(folder: Path, options: ClaimsOptions | None = None) -> dict:
    """{claim key: overall verdict word} from the stored records."""
    if options is None:
        options = ClaimsOptions()
    exp = load_experiment(folder)
    return {key: claim(exp, options).overall.word for key, claim in CLAIMS.items()}


@pytest.mark.parametrize("n_seeds, streams", [(3, range(40)), (6, range(100, 140))])
@pytest.mark.slow
def test_under_the_null_c_or_d_rarely_does_not_hold(tmp_path, n_seeds, streams):
    refuted, words = 0, []
    for stream in streams:
        v = verdicts(fixture(tmp_path, stream, n_seeds))
        words.append(v)
        refuted += any(w == FAILS for w in v.values())
        assert not any(w == HOLDS for w in v.values()) or n_seeds > 3  # nothing can hold at n = 3 either
    rate = refuted / len(streams)
    print(f"n = {n_seeds}: (c) or (d) 'does not hold' in {refuted}/{len(streams)} null fixtures ({rate:.1%})")
    assert rate <= 0.10
    if n_seeds == 3:  # the exact one-sided floor 1/2^3 = 0.125 is above alpha: no refutation is possible
        assert refuted == 0 and all(w == INCONCLUSIVE for v in words for w in v.values())


@pytest.mark.parametrize("n_seeds", [8, 10])
def test_a_large_consistent_effect_holds_from_8_seeds(tmp_path, n_seeds):
    v = verdicts(fixture(tmp_path, 7, n_seeds, edge=0.5))  # 0.5 x 10 FID, 0.5 SWD: far above the noise
    assert v == {"c": HOLDS, "d1": HOLDS, "d2": HOLDS}


def test_an_inconclusive_verdict_states_the_effect_its_interval_and_the_n_it_needs(tmp_path):
    exp = load_experiment(fixture(tmp_path, 9, 3, edge=0.5))
    v = claim_d1(exp, ClaimsOptions()).verdicts["lesions_lt"]
    assert v.label == "inconclusive at n = 3"
    # Holm over 2 image datasets: the strictest level 0.025, whose exact one-sided floor needs 6 seeds
    assert "vs no augmentation: mean difference " in v.why and "80 % power at one-sided 0.025" in v.why
    assert "1/2^3 = 0.125 >= 0.025: at least 6 seeds are needed" in v.why
    need = int(v.why.split("needs n = ")[1].split(" ")[0])
    assert need >= seeds_needed(0.025, two_sided=False) == 6


# ---- Holm -----------------------------------------------------------------------------------------


def holm_rejections(p: list, alpha: float) -> set:
    """Holm's procedure as stated: step down the sorted p's, reject while p_(i) < alpha / (m - i)."""
    order, out = np.argsort(p, kind="stable"), set()
    for i, k in enumerate(order):
        if p[k] >= alpha / (len(p) - i):
            break
        out.add(int(k))
    return out


def test_holm_adjusted_values_by_hand_and_against_the_step_down_procedure():
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005, 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    assert adj == pytest.approx({"d": 0.02, "a": 0.03, "c": 0.06, "b": 0.06})
    assert holm({"x": 0.7, "y": None}) == {"x": 1.0, "y": 1.0}  # an undefined p counts, as 1
    rng = np.random.default_rng(31)
    for _ in range(200):
        p = list(rng.uniform(0, 0.1, int(rng.integers(1, 8))))
        adj = holm(dict(enumerate(p)))
        for alpha in (0.01, 0.05):
            assert {k for k, a in adj.items() if a < alpha} == holm_rejections(p, alpha)


def test_holm_holds_the_familywise_error_at_alpha_under_the_null():
    rng = np.random.default_rng(32)
    p = rng.uniform(size=(4000, 6))
    any_reject = np.mean([min(holm(dict(enumerate(row))).values()) < 0.05 for row in p])
    assert any_reject <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 4000)


# ---- the seeds an observed effect needs ------------------------------------------------------------


def simulated_power(dz: float, n: int, alpha: float, rng: np.random.Generator, draws: int = 20000) -> float:
    """Share of simulated N(dz, 1) samples of size n whose one-sided t-test rejects at alpha."""
    x = rng.normal(dz, 1.0, size=(draws, n))
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
    return float(np.mean(t > stats.t.ppf(1 - alpha, n - 1)))


@pytest.mark.parametrize("dz, alpha", [(0.5, 0.05), (1.0, 0.05 / 3), (1.6, 0.05)])
def test_power_n_matches_a_simulation(dz, alpha):
    rng = np.random.default_rng(int(dz * 100))
    n = seeds_for_power(dz, 1.0, alpha, exact=False)
    se = 3 * math.sqrt(0.16 / 20000)
    assert simulated_power(dz, n, alpha, rng) >= 0.8 - se
    assert simulated_power(dz, n - 1, alpha, rng) < 0.8 + se or n == 2
    assert seeds_for_power(-dz, 1.0, alpha, exact=False) == n  # the observed effect's size, either sign


def test_power_n_never_goes_below_the_exact_tests_floor():
    assert seeds_for_power(10.0, 1.0, 0.05) == 5  # 1/2^5 < 0.05 <= 1/2^4, however large the effect
    assert seeds_for_power(10.0, 1.0, 0.05 / 9) == 8
    assert seeds_for_power(1.0, 0.0, 0.05 / 3) == 6  # no spread: the floor alone
    assert seeds_for_power(0.0, 1.0, 0.05) is None and seeds_for_power(1.0, None, 0.05) is None


def test_a_mean_that_is_zero_but_for_rounding_is_no_effect_and_tiny_effects_do_not_overflow():
    """Differences that cancel (a field cell: -0.02, 0.018333, 0.001667) average to ~1e-17, not 0."""
    d = np.array([-0.02, 0.01833333333333331, 0.0016666666666667052])
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    assert mean != 0 and abs(mean) < 1e-15
    assert seeds_for_power(mean, sd, 0.05 / 6) is None
    # a real but tiny effect: the z-test's n, (z_{1-a} + z_{power})^2 / dz^2, rounded up
    z = stats.norm.ppf(1 - 0.05) + stats.norm.ppf(0.8)
    assert seeds_for_power(1e-3, 1.0, 0.05) == math.ceil((z / 1e-3) ** 2)
    n = seeds_for_power(0.02, 1.0, 0.05, exact=False)  # past LARGE_N: the z-test's n...
    assert n == math.ceil((z / 0.02) ** 2) > 10_000
    # ...where the t-test's power is 80 % to within 0.1 %
    assert abs(stats.nct.sf(stats.t.ppf(0.95, n - 1), n - 1, 0.02 * math.sqrt(n)) - 0.8) < 1e-3


# ---- zero differences have no sign ---------------------------------------------------------------


def brute_one_sided(d: list) -> float:
    """Share of all sign assignments whose sum is at least the observed sum (pure Python)."""
    flips = list(itertools.product([1, -1], repeat=len(d)))
    return sum(math.fsum(s * x for s, x in zip(signs, d)) >= math.fsum(d) - 1e-12 for signs in flips) / len(
        flips
    )


def test_zero_differences_are_dropped_by_the_exact_tests_and_their_floor():
    d = [0.0, 0.4, 0.0, 1.1, -0.2, 0.7]
    assert sign_flip_p(np.array(d)) == sign_flip_p(np.array([0.4, 1.1, -0.2, 0.7]))
    assert sign_flip_p(np.array(d), alternative="greater") == pytest.approx(
        brute_one_sided([0.4, 1.1, -0.2, 0.7])
    )
    assert sign_flip_p(np.zeros(4)) == 1.0
    # scipy's "wilcox" zero method drops zeros too
    assert wilcoxon_p(np.array(d)) == pytest.approx(stats.wilcoxon([0.4, 1.1, -0.2, 0.7]).pvalue)
    assert nonzero(d) == 4 and min_p(nonzero(d)) == 2 / 16
    same = [0.0, 0.0, 0.3, 0.3, 0.3, 0.3]  # 4 nonzero positives: p = 2/2^4, not the 2/2^6 six seeds suggest
    assert sign_flip_p(np.array(same)) == pytest.approx(min_p(4)) and min_p(4) > 0.05


def candidate(diffs: list, p: float) -> Comparison:
    return Comparison(len(diffs), float(np.mean(diffs)), tuple(enumerate(diffs)), p, significant=p < 0.05)


def test_question_e_states_the_seed_floor_at_the_level_its_p_is_held_to():
    up = [0.01, 0.02, 0.01, 0.03, 0.02, -0.01]
    v = any_beats_verdict(
        {m: candidate(up, 0.03) for m in ("fm", "cpd", "optprior")}, "crt", True, "permutation", 0.05
    )
    assert v.word == INCONCLUSIVE
    # held to 0.05 / 3 = 0.0167: 2/2^6 = 0.0312 cannot reach it, 2/2^7 = 0.0156 can
    assert "2/2^6 = 0.0312 >= 0.0167 (alpha / 3)" in v.why and "needs at least 7" in v.why
    zeros = [0.0, 0.0, 0.01, 0.02, 0.01, -0.01]
    v = any_beats_verdict({"fm": candidate(zeros, 0.5)}, "crt", True, "permutation", 0.05)
    assert "with n = 4 nonzero paired differences" in v.why and "2/2^4 = 0.125 >= 0.05" in v.why


def test_a_rounding_difference_between_equal_scores_is_a_zero_difference():
    """bAcc 0.9 computed along two paths can differ by 1e-16; the exact test must not count its sign."""
    from bench.metrics.significance import compare

    runs = lambda values: {(seed, 0): v for seed, v in values.items()}  # noqa: E731  (seed, run) -> value
    c = compare(runs({0: 0.9, 1: 0.95, 2: 0.93}), runs({0: 0.9 + 1.11e-16, 1: 0.90, 2: 0.91}))
    assert dict(c.diffs)[0] == 0.0 and c.nonzero == 2
    without = compare(runs({1: 0.95, 2: 0.93}), runs({1: 0.90, 2: 0.91}))
    assert c.p_greater == without.p_greater == 0.25
