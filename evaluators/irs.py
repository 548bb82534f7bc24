"""Image Retrieval Score (IRS; Dombrowski et al., CVPR 2025, arXiv 2411.16171): how many training
images a generator has effectively learned, per augmented class.

Each query (synthetic image) retrieves its L2-nearest training image in feature space; k distinct
training images are hit by n queries out of N. IRS_alpha = k / N depends on n. IRS_inf models the
generator as drawing uniformly from s learned training images: the number K of distinct images
among n draws from s has P(K = k | s, n) = s! / (s - k)! * S2(n, k) / s^n (S2: Stirling numbers
of the second kind), and s_hat = argmax_s P(k | s, n) over k <= s <= N; IRS_inf = s_hat / N.

Confidence bounds follow the reference implementation (MischaD/BeyondFID, metrics/irs.py): the
upper bound is the largest s >= s_hat whose one-sided test P(K <= k | s, n) >= alpha does not reject
(more learned images would make so few distinct hits unlikely), the lower bound the smallest
s <= s_hat with P(K >= k | s, n) >= alpha. Unlike the reference, the pmf over K is renormalised
before summing, which removes most of the Stirling approximation's error from the tails.

Real test images as queries measure the same retrieval on real data (the measurement gap):
irs_adjusted = s_hat(synthetic) / s_hat(test), with the larger query set subsampled to the
smaller.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from scipy.special import gammaln, lambertw, logsumexp

from bench.context import INIT, SOURCE
from bench.evaluator import Evaluator, Metric, directions
from bench.evaluators.fid import equal_n_pairs, evaluated_classes, synthetic_sets
from bench.metrics.neighbours import nearest
from bench.registry import register_evaluator

log = logging.getLogger(__name__)


def log_stirling2(n: int, k) -> np.ndarray:
    """log S2(n, k) by Temme's uniform asymptotic approximation (vectorised over k).

    With v = n / k and G the root in (0, 1) of G = v exp(G - v), i.e. G = -W0(-v e^-v),
    log S2 ~ 1/2 log((v-1) / (v (1-G))) + (n-k) log((v-1) / (v-G)) + n log k - k log n
    + k (1 - G) + log C(n, k). Exact at k = 1 and k = n (both 0); -inf outside 1 <= k <= n.
    Absolute error in log S2 is about 0.06 / n (<= 0.015 for n >= 3, 6e-5 at n = 1000).
    """
    k = np.atleast_1d(np.asarray(k, dtype=np.float64))
    out = np.full(k.shape, -np.inf)
    out[(k == 1) | (k == n)] = 0.0
    mid = (k > 1) & (k < n)
    km = k[mid]
    v = n / km
    g = -lambertw(-v * np.exp(-v), 0).real
    log_binom = gammaln(n + 1) - gammaln(km + 1) - gammaln(n - km + 1)
    out[mid] = (
        0.5 * np.log((v - 1) / (v * (1 - g)))
        + (n - km) * np.log((v - 1) / (v - g))
        + n * np.log(km)
        - km * np.log(n)
        + km * (1 - g)
        + log_binom
    )
    return out


def log_likelihood(s, k: int, n: int, log_s2: float) -> np.ndarray:
    """log P(K = k | s, n) for every s in `s` (all >= k): log s!/(s-k)! + log S2(n, k) - n log s."""
    s = np.asarray(s, dtype=np.float64)
    return gammaln(s + 1) - gammaln(s - k + 1) + log_s2 - n * np.log(s)


def distinct_count_log_pmf(s: int, n: int, log_s2_all: np.ndarray) -> np.ndarray:
    """log P(K = j | s, n) for j = 1..min(n, s), renormalised; log_s2_all[j - 1] = log S2(n, j)."""
    j = np.arange(1, min(n, s) + 1)
    logp = log_likelihood(s, j, n, 0.0) + log_s2_all[: len(j)]
    return logp - logsumexp(logp)


def _last_true(lo: int, hi: int, ok) -> int:
    """The last s in [lo, hi] with ok(s), for ok true on a prefix of the range; lo - 1 if none."""
    if lo > hi or not ok(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def irs_from_counts(k: int, n: int, N: int, alpha: float = 0.05) -> dict:
    """IRS_alpha, IRS_inf and its one-sided (1 - alpha) bounds from k distinct hits of n queries."""
    if not 1 <= k <= min(n, N):
        raise ValueError(f"need 1 <= k <= min(n, N), got k={k} n={n} N={N}")
    log_s2_all = log_stirling2(n, np.arange(1, n + 1))
    s = np.arange(k, N + 1)
    s_hat = int(s[np.argmax(log_likelihood(s, k, n, log_s2_all[k - 1]))])
    log_alpha = np.log(alpha)
    # P(K <= k | s) falls as s grows and P(K >= k | s) rises: each test accepts a contiguous range
    pmf = lambda t: distinct_count_log_pmf(t, n, log_s2_all)  # noqa: E731
    cdf_ok = lambda t: logsumexp(pmf(t)[:k]) >= log_alpha  # P(K <= k | t) >= alpha  # noqa: E731
    sf_ok = lambda t: logsumexp(pmf(t)[k - 1 :]) >= log_alpha  # P(K >= k | t) >= alpha  # noqa: E731
    high = _last_true(s_hat + 1, N, cdf_ok)  # s_hat when every larger s is rejected
    low = _last_true(k, s_hat - 1, lambda t: not sf_ok(t)) + 1  # s_hat when every smaller s is
    return {
        "irs_alpha": k / N,
        "irs_inf": s_hat / N,
        "irs_inf_low": low / N,
        "irs_inf_high": high / N,
        "s_hat": s_hat,
        "k": k,
        "n": n,
        "N": N,
    }


def nearest_train_index(train: np.ndarray, queries: np.ndarray, batch_elems: int = 1 << 24) -> np.ndarray:
    """Index of the L2-nearest training row of every query (exact, float64, batched)."""
    chunk = max(1, int(np.sqrt(batch_elems)))  # (chunk, chunk) distance blocks of batch_elems entries
    return nearest(np.asarray(queries, dtype=np.float64), np.asarray(train, dtype=np.float64), chunk)[1]


def image_retrieval_score(
    train_features: np.ndarray, query_features: np.ndarray, alpha: float = 0.05
) -> dict:
    """IRS of a query set against a training set: irs_alpha, irs_inf (+ bounds), s_hat, k, n, N."""
    hits = nearest_train_index(train_features, query_features)
    return irs_from_counts(len(np.unique(hits)), len(hits), len(train_features), alpha)


@register_evaluator("irs")
class IRS(Evaluator):
    """IRS of each augmented class's synthetic samples against that class's real training images.

    Metrics: `irs_inf/tail` (mean over the augmented classes), `irs_inf/pooled` and
    `irs_alpha/pooled` (all augmented classes' queries against all their training images),
    `irs_adjusted/tail` and `irs_adjusted/pooled` (s_hat of synthetic over s_hat of real test
    queries; per class both query sets are subsampled to the smaller, seeded, as in the
    reference), `n/irs` (synthetic queries in the pooled score, equal to its real test queries),
    and the same with suffix `@init` for the untrained model's samples and `@source` for the
    method's source draws decoded with no flow, when the cell has them.
    The queries are the cell's generative set when it has one (`generative.n_total`), else its
    synthetic set. A class without training, synthetic or test samples is skipped (logged).
    `alpha` is the significance level of each one-sided bound on IRS_inf. Per-class details
    go to `<out_dir>/irs.json`.
    """

    applies_to = ("image",)
    metrics = (
        Metric("irs_inf/tail", "IRS tail", True),
        Metric("irs_inf/pooled", "IRS pooled", True),
        Metric("irs_alpha/pooled", "IRS alpha pooled", True),
        Metric("irs_adjusted/tail", "IRS adj. tail", True, headline=True, rank=40),
        Metric("irs_adjusted/pooled", "IRS adj. pooled", True),
        Metric("n/irs", "IRS queries", None, on_features=False),
    )  # a sample count: no better side, the same on any features
    higher_is_better = directions(metrics, ("", INIT, SOURCE))

    def __init__(self, alpha: float = 0.05):
        self.alpha = alpha

    def evaluate(self, cell) -> dict[str, float]:
        """IRS metrics for the trained model's samples and each reference set the cell has."""
        classes = evaluated_classes(cell)
        train, train_y = cell.features("train"), cell.train.y.numpy()
        test, test_y = cell.features("test"), cell.test.y.numpy()
        metrics, details = {}, {"set": cell.generative_set, "classes": {}}
        for suffix, name in synthetic_sets(cell):
            pairs = equal_n_pairs(
                cell.features(name),
                cell.split(name).y.numpy(),
                test,
                test_y,
                [c for c in classes if np.any(train_y == c)],
                cell.seed,
            )
            per_class = {c: self._score(train[train_y == c], a, b) for c, (a, b) in pairs.items()}
            for c, result in per_class.items():
                details["classes"].setdefault(cell.class_names[c], {"index": c})[name] = result
            if not per_class:
                continue
            pooled_train = train[np.isin(train_y, list(pairs))]
            queries, real = (np.concatenate(side) for side in zip(*pairs.values()))
            pooled = self._score(pooled_train, queries, real)
            details[f"pooled{suffix}"] = pooled
            results = per_class.values()
            metrics |= {
                f"irs_inf/tail{suffix}": float(np.mean([r["synthetic"]["irs_inf"] for r in results])),
                f"irs_adjusted/tail{suffix}": float(np.mean([r["irs_adjusted"] for r in results])),
                f"irs_inf/pooled{suffix}": pooled["synthetic"]["irs_inf"],
                f"irs_alpha/pooled{suffix}": pooled["synthetic"]["irs_alpha"],
                f"irs_adjusted/pooled{suffix}": pooled["irs_adjusted"],
                f"n/irs{suffix}": float(len(queries)),
            }
        cell.out_dir.mkdir(parents=True, exist_ok=True)
        (cell.out_dir / "irs.json").write_text(json.dumps(details | {"metrics": metrics}, indent=1))
        return metrics

    def _score(self, train: np.ndarray, synthetic: np.ndarray, test: np.ndarray) -> dict:
        """IRS of equal-size synthetic and test query sets against one training set."""
        syn = image_retrieval_score(train, synthetic, self.alpha)
        real = image_retrieval_score(train, test, self.alpha)
        return {"synthetic": syn, "test": real, "irs_adjusted": syn["s_hat"] / real["s_hat"]}
