"""Fréchet distance (FID) between synthetic and real domain features, per augmented class.

The Fréchet distance between Gaussians N(mu1, S1) and N(mu2, S2) is
||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr((S1 S2)^(1/2)). S1 S2 has the eigenvalues of the
symmetric PSD matrix S1^(1/2) S2 S1^(1/2), and so has F^T S2 F for any F with F F^T = S1; the
trace term is the sum of the square roots of that symmetric matrix's eigenvalues. A Cholesky
(or eigh) factor and one symmetric eigenvalue solve replace scipy.linalg.sqrtm of the
non-symmetric S1 S2, which is 5-8x slower at d = 2048 and was broken in some SciPy releases
(NOTES section 3). FID is biased at small n, so the evaluator always compares equal numbers of
synthetic and real samples and records that n.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from bench.context import INIT, SOURCE
from bench.errors import BenchError
from bench.evaluator import Evaluator, Metric, directions
from bench.evaluators.swd import equal_size
from bench.registry import register_evaluator

log = logging.getLogger(__name__)

REFERENCES = ("test", "train")


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased (n - 1) covariance of (n, d) features, in float64; needs n >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"gaussian_stats needs an (n >= 2, d) array, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def psd_factor(sigma: np.ndarray) -> np.ndarray:
    """F with F F^T = sigma, for symmetric PSD sigma.

    For any such F, F^T S2 F has the nonzero eigenvalues of S1 S2 (and of the symmetric
    S1^(1/2) S2 S1^(1/2)). Cholesky is the cheap F (about 1/15 of an eigendecomposition at
    d = 2048); when sigma is singular (n <= d, constant features) Cholesky fails and
    F = V diag(sqrt(w)) over the eigenvalues of sigma above round-off (d eps max w) is used
    instead, i.e. S^(1/2) without its last V^T (an orthogonal similarity), round-off and
    negative eigenvalues clipped to 0.
    """
    try:
        return np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(sigma)
        keep = w > len(w) * np.finfo(np.float64).eps * max(w.max(), 0.0)  # above round-off
        return v[:, keep] * np.sqrt(w[keep])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between two Gaussians, in float64, >= 0.

    Works for rank-deficient covariances (n <= d) too: the factor of S1 and the final
    eigenvalues both clip the negative eigenvalues that round-off produces.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"mismatched Gaussian stats: {mu1.shape} {sigma1.shape} vs {mu2.shape} {sigma2.shape}"
        )
    factor = psd_factor(sigma1)
    inner = factor.T @ sigma2 @ factor  # same nonzero eigenvalues as S1^(1/2) S2 S1^(1/2)
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    return max(float(value), 0.0)  # tiny negative values are round-off of identical stats


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussian fits of two feature sets."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def evaluated_classes(cell) -> list[int]:
    """The augmented classes, or every class with scored samples when the cell has no plan."""
    scored = cell.split(cell.generative_set).y.numpy()
    return cell.augmented_classes or sorted(int(c) for c in np.unique(scored))


def synthetic_sets(cell) -> list[tuple[str, str]]:
    """(metric suffix, set name) of the trained model's samples and the reference sets present.

    The trained model's samples are the cell's generative set when it has one (bench.metrics.generative:
    the paper's 50,000 samples), else its synthetic set; `@init` is always the untrained
    backbone's synthetic-size set, `@source` the method's source draws sized like the scored set.
    """
    return cell.scored_sets(cell.generative_set)


def equal_n_pairs(
    fake: np.ndarray,
    fake_y: np.ndarray,
    real: np.ndarray,
    real_y: np.ndarray,
    classes: list[int],
    seed: int,
    min_n: int = 1,
) -> dict[int, tuple]:
    """Per class, (fake, real) rows of that class at equal n (the larger subsampled, seeded).

    Classes with fewer than `min_n` rows on either side are left out and logged.
    """
    pairs = {}
    for c in classes:
        a, b = equal_size(fake[fake_y == c], real[real_y == c], np.random.default_rng([seed, c]))
        if len(a) < min_n:
            log.info("class %d: only %d synthetic/real pairs (< %d), skipped", c, len(a), min_n)
            continue
        pairs[c] = (a, b)
    return pairs


def per_class_distance(cell, reference: str, name: str, distance, record_n: bool = False) -> dict[str, float]:
    """A two-sample distance between synthetic and real features per evaluated class, at equal n.

    For each scored set (suffix "", `@init`, `@source`): `<name>/tail` the mean over the classes
    of distance(fake, real), `<name>/pooled` the distance of all those pairs together and, with
    `record_n`, `n/<name>` the pooled size. Per-class values (and their n) go to
    `<out_dir>/<name>.json`. Shared by FID and KID.
    """
    classes = evaluated_classes(cell)
    real, real_y = cell.features(reference), cell.split(reference).y.numpy()
    metrics, details = {}, {"reference": reference, "set": cell.generative_set, "classes": {}}
    for suffix, set_name in synthetic_sets(cell):
        pairs = equal_n_pairs(
            cell.features(set_name), cell.split(set_name).y.numpy(), real, real_y, classes, cell.seed, min_n=2
        )
        per_class = {c: distance(a, b) for c, (a, b) in pairs.items()}
        for c, value in per_class.items():
            entry = details["classes"].setdefault(cell.class_names[c], {"index": c})
            entry |= {f"{name}{suffix}": value, **({f"n{suffix}": len(pairs[c][0])} if record_n else {})}
        if per_class:
            metrics[f"{name}/tail{suffix}"] = float(np.mean(list(per_class.values())))
            fake_all, real_all = (np.concatenate(side) for side in zip(*pairs.values()))
            metrics[f"{name}/pooled{suffix}"] = distance(fake_all, real_all)
            if record_n:
                metrics[f"n/{name}{suffix}"] = float(len(fake_all))
    cell.out_dir.mkdir(parents=True, exist_ok=True)
    (cell.out_dir / f"{name}.json").write_text(json.dumps(details | {"metrics": metrics}, indent=1))
    return metrics


@register_evaluator("fid")
class FID(Evaluator):
    """FID of each augmented class's synthetic samples against real samples of that class.

    Metrics: `fid/tail` (mean over the augmented classes of the per-class FID), `fid/pooled`
    (FID of all augmented classes together, each at its equal n), `n/fid` (samples per side in
    the pooled comparison), and the same with suffix `@init` for the untrained model's samples
    and `@source` for the method's source draws decoded with no flow, when the cell has them.
    The synthetic side is the cell's generative set when it has one (`generative.n_total`), else
    its synthetic set. `reference` picks the real set: "test" (held out, default) or "train" (the
    paper's). Per-class values and their n go to `<out_dir>/fid.json`.
    """

    applies_to = ("image",)
    metrics = (
        Metric("fid/tail", "FID tail", False, headline=True, rank=10),
        Metric("fid/pooled", "FID pooled", False, headline=True, rank=20),
        Metric("n/fid", "FID n per set", None, on_features=False),
    )  # a sample count: no better side, the same on any features
    higher_is_better = directions(metrics, ("", INIT, SOURCE))

    def __init__(self, reference: str = "test"):
        if reference not in REFERENCES:
            raise BenchError(f"fid: reference {reference!r} is not one of {REFERENCES}; set fid.reference")
        self.reference = reference

    def evaluate(self, cell) -> dict[str, float]:
        """FID metrics for the trained model's samples and the reference sets present."""
        return per_class_distance(cell, self.reference, "fid", fid, record_n=True)
