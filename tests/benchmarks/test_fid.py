"""Benchmark: the Fréchet distance at Inception / DenseNet scale (issue "Evaluators").

Two sets of N = 50,000 features of dimension D = 2,048 (BENCH_FID_N / BENCH_FID_D scale it); their
Gaussian stats are computed once, outside the timed part. Times bench's eigenvalue route
(`frechet_distance`) against the route pytorch-fid uses, the trace of scipy.linalg.sqrtm(S1 S2)'s
real part, and asserts it is at least 5x faster and agrees within 1e-6 relative.

Skipped in the default run: `pytest tests/benchmarks --benchmark-only -k fid`.
"""

import os
import time

import numpy as np
import pytest
import scipy.linalg

from bench.evaluators.fid import frechet_distance, gaussian_stats

N = int(os.environ.get("BENCH_FID_N", 50_000))
D = int(os.environ.get("BENCH_FID_D", 2_048))


def correlated_features(rng: np.random.Generator, shift: float) -> np.ndarray:
    """(N, D) float32 features with a random full-rank covariance and mean `shift`."""
    mixing = (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32)
    return rng.standard_normal((N, D), dtype=np.float32) @ mixing + np.float32(shift)


def sqrtm_route(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's computation: tr of the (real part of the) principal sqrt of S1 S2."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@pytest.fixture(scope="module")
def stats():
    rng = np.random.default_rng(0)
    return gaussian_stats(correlated_features(rng, 0.0)) + gaussian_stats(correlated_features(rng, 0.1))


def test_frechet_distance_vs_sqrtm(benchmark, stats):
    value = benchmark.pedantic(frechet_distance, args=stats, rounds=3, iterations=1)
    t0 = time.perf_counter()
    reference = sqrtm_route(*stats)
    sqrtm_seconds = time.perf_counter() - t0
    ours = benchmark.stats.stats.mean
    benchmark.extra_info.update(n=N, d=D, fid=value, eig_seconds=ours, sqrtm_seconds=sqrtm_seconds,
                                speedup=sqrtm_seconds / ours)
    print(f"\nN={N} D={D}: eig {ours:.2f} s, sqrtm {sqrtm_seconds:.2f} s, "
          f"speedup {sqrtm_seconds / ours:.1f}x, FID {value:.6f} vs {reference:.6f}")
    assert value == pytest.approx(reference, rel=1e-6)
    assert sqrtm_seconds >= 5 * ours
