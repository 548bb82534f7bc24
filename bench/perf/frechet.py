"""Case `fid`: bench's Fréchet distance against the scipy.linalg.sqrtm route, at d = 2,048.

Two sets of features with a random full-rank covariance (the shape of Inception / DenseNet pool
features) are reduced to Gaussian stats once, outside the timing. bench's route (Cholesky factor
and a symmetric eigenvalue problem, bench.evaluators.fid.frechet_distance) is timed against
pytorch-fid's: the trace of the real part of scipy.linalg.sqrtm(S1 S2). Targets: speed-up >= 5x,
relative difference <= 1e-6.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.linalg

from bench.evaluators.fid import frechet_distance, gaussian_stats
from bench.perf.case import Measurement, median, timed

SIZES = {"full": (50_000, 2_048), "smoke": (600, 64)}  # (n features per set, dimension d)
REPEATS = 3


def correlated_features(rng: np.random.Generator, n: int, d: int, shift: float) -> np.ndarray:
    """(n, d) float32 features with a random full-rank covariance and mean `shift`."""
    mixing = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    return rng.standard_normal((n, d), dtype=np.float32) @ mixing + np.float32(shift)


def sqrtm_route(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's computation: tr of the (real part of the) principal square root of S1 S2."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def measure(scale: str, workdir: Path) -> Measurement:
    """Median seconds of each route over REPEATS interleaved runs, their ratio and agreement."""
    n, d = SIZES[scale]
    rng = np.random.default_rng(0)
    stats = gaussian_stats(correlated_features(rng, n, d, 0.0)) + gaussian_stats(
        correlated_features(rng, n, d, 0.1)
    )
    ours, ref = [], []
    for _ in range(REPEATS):  # interleaved, so machine noise hits both routes alike
        seconds, value = timed(frechet_distance, *stats)
        ours.append(seconds)
        seconds, reference = timed(sqrtm_route, *stats)
        ref.append(seconds)
    speedup = median(ref) / median(ours)
    rel_diff = abs(value - reference) / abs(reference)
    return Measurement(
        keys={"fid_speedup_vs_sqrtm": speedup, "fid_rel_diff": rel_diff},
        details={
            "n": n,
            "d": d,
            "repeats": REPEATS,
            "bench_s": ours,
            "sqrtm_s": ref,
            "fid_bench": value,
            "fid_sqrtm": reference,
        },
    )
