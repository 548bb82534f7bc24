"""Benchmark: optprior's offline stage (subclass induction + 2,500 source steps).

Target (issue 3): n = 20,000 latents of dimension 16,384 (FLUX VAE at 256 x 256) in 20 classes
in under 10 minutes and 8 GiB on 2 cores. Skipped in the default run; run with
`pytest tests/benchmarks --benchmark-only -k offline`. BENCH_OFFLINE_N / _D / _C scale it down;
BENCH_OFFLINE_BATCH sets optprior.batch_size (default 4096: ~1.6 s per step at D = 16,384 on 2
cores, so 2,500 steps take over an hour; 256 brought the whole stage to 385 s).
"""

import os
import resource

import pytest
import torch

from bench.longtail import exponential_profile
from bench.methods.optprior import OptPrior

N = int(os.environ.get("BENCH_OFFLINE_N", 20_000))
D = int(os.environ.get("BENCH_OFFLINE_D", 16_384))
C = int(os.environ.get("BENCH_OFFLINE_C", 20))
BATCH = int(os.environ.get("BENCH_OFFLINE_BATCH", 4096))


def long_tailed_latents():
    """N latents in C long-tailed classes, each class two shifted Gaussian subclasses."""
    total = sum(exponential_profile(10_000, C, 100))
    counts = [max(2, round(N * c / total)) for c in exponential_profile(10_000, C, 100)]
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    sub = torch.randint(0, 2, (len(labels),), generator=g)
    centres = torch.randn(C, 2, D, generator=g)
    z = centres[labels, sub] + 0.5 * torch.randn(len(labels), D, generator=g)
    return z, labels


@pytest.mark.parametrize("pca_dim", [None, 64])
def test_offline_stage(benchmark, pca_dim):
    z, labels = long_tailed_latents()
    method = OptPrior(pca_dim=pca_dim, risk_samples=0, batch_size=BATCH)
    prior = benchmark.pedantic(method.fit_prior, args=(z, labels, C, 0), rounds=1, iterations=1)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    benchmark.extra_info.update(n=len(z), d=D, classes=C, pca_dim=pca_dim, peak_rss_gib=peak_gib,
                                k=prior.info["k"])
    assert len(prior.info["k"]) == C
