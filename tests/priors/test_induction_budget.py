"""optprior's induction memory budget: the scheduler's bound, the estimate, same fits whatever the budget."""

import threading
import time
import tracemalloc

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.methods.optprior import OptPrior
from bench.prior import class_means
from bench.priors.subclass import induce_subclasses, induction_peak_bytes, run_within_budget

FAST = dict(steps=10, risk_samples=0, geometry_draws=0)


class Tracker:
    """A fake fit: holds its cost while it sleeps, and records the cost really in flight."""

    def __init__(self, cost, seconds):
        self.cost, self.seconds = cost, seconds
        self.lock, self.held, self.most, self.starts = threading.Lock(), 0, 0, []

    def fit(self, item):
        with self.lock:
            self.held += self.cost[item]
            self.most = max(self.most, self.held)
        time.sleep(self.seconds[item])
        with self.lock:
            self.held -= self.cost[item]
        return item * 10

    def on_start(self, item, in_flight):
        self.starts.append((item, in_flight))


@pytest.mark.parametrize("budget, workers", [(5.0, 2), (5.0, 4), (9.0, 3), (2.5, 8)])
def test_the_costs_in_flight_never_exceed_the_budget(budget, workers):
    rng = np.random.default_rng(0)
    cost = {i: float(c) for i, c in enumerate(rng.uniform(0.1, 2.5, 30))}
    seconds = {i: float(s) for i, s in enumerate(rng.uniform(0.001, 0.02, 30))}
    order = sorted(cost, key=lambda i: -cost[i])
    fake = Tracker(cost, seconds)
    out = run_within_budget(fake.fit, order, cost, budget, workers, on_start=fake.on_start)
    assert out == {i: i * 10 for i in cost}
    assert sorted(i for i, _ in fake.starts) == sorted(cost)
    assert all(in_flight <= budget + 1e-12 for _, in_flight in fake.starts)
    assert fake.most <= budget + 1e-12


def test_an_item_over_budget_runs_alone_and_small_ones_run_side_by_side():
    cost = {0: 10.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    fake = Tracker(cost, {0: 0.05, 1: 0.05, 2: 0.05, 3: 0.05, 4: 0.05})
    run_within_budget(fake.fit, [0, 1, 2, 3, 4], cost, 2.0, 4, on_start=fake.on_start)
    assert fake.starts[0] == (0, 10.0)  # alone, over budget
    assert fake.most == 10.0  # nothing joined it
    fake = Tracker({i: 1.0 for i in range(4)}, {i: 0.05 for i in range(4)})
    run_within_budget(fake.fit, range(4), fake.cost, 2.0, 4)
    assert fake.most == 2.0  # two side by side: what the budget allows, not one at a time


def test_no_budget_uses_every_worker():
    fake = Tracker({i: 1.0 for i in range(6)}, {i: 0.05 for i in range(6)})
    run_within_budget(fake.fit, range(6), fake.cost, None, 3)
    assert fake.most == 3.0


def test_a_failing_fit_raises_after_the_others_finish():
    finished = []

    def fit(item):
        if item == 1:
            raise BenchError("class 1 has no training samples")
        time.sleep(0.02)
        finished.append(item)

    with pytest.raises(BenchError, match="class 1"):
        run_within_budget(fit, [0, 1, 2], {0: 1, 1: 1, 2: 1}, None, 2)
    assert 0 in finished


def test_the_estimate_covers_sklearns_allocations():
    """tracemalloc sees numpy's allocations: the residuals plus sklearn's peak stay under the estimate."""
    rng = np.random.default_rng(0)
    r = np.concatenate([rng.normal(size=(200, 3000)) + 3, rng.normal(size=(200, 3000)) - 3])
    tracemalloc.start()
    try:
        induce_subclasses(r, k_max=4, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.nbytes + peak <= induction_peak_bytes(*r.shape)
    assert r.nbytes + peak >= 0.8 * induction_peak_bytes(*r.shape)  # and is not far above it


def long_tailed(seed=1, classes=5):
    """Classes of 320 down to 20 rows in 30 dims, two subclasses each."""
    rng = np.random.default_rng(seed)
    counts = [320, 160, 80, 40, 20][:classes]
    labels = torch.tensor(np.repeat(np.arange(classes), counts))
    sub = rng.integers(0, 2, len(labels))
    x = rng.normal(size=(classes, 2, 30))[labels.numpy(), sub] * 4 + rng.normal(size=(len(labels), 30))
    x = torch.tensor(x, dtype=torch.float32)
    return x, labels, class_means(x, labels, classes)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.slow
def test_the_fits_are_the_same_whatever_the_budget(threads):
    x, labels, means = long_tailed()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = {
            b: OptPrior(induction_memory_gib=b, **FAST)._induce(x, means, labels, 5, seed=3)
            for b in (1e-9, 1e-4, None)
        }  # one class at a time, some side by side, no limit
    finally:
        torch.set_num_threads(before)
    for c in range(5):
        want = induce_subclasses((x[labels == c] - means[c]).double().numpy(), seed=3)
        for fits in runs.values():
            assert fits[c].k == want.k and fits[c].ebic == want.ebic and fits[c].sizes == want.sizes
            np.testing.assert_array_equal(fits[c].assignment, want.assignment)


def test_the_budget_decides_what_runs_at_once(monkeypatch):
    """The induction starts classes by the budget: record the estimates in flight at each start."""
    import bench.methods.optprior as optprior

    x, labels, means = long_tailed()
    seen = []

    def spy(fn, items, cost, budget, workers, on_start=None):
        seen.append((dict(cost), budget, workers))
        return run_within_budget(fn, items, cost, budget, workers, on_start=lambda i, f: starts.append(f))

    starts = []
    monkeypatch.setattr(optprior, "run_within_budget", spy)
    budget_gib = 1.5 * induction_peak_bytes(160, 30) / 2**30
    OptPrior(induction_memory_gib=budget_gib, **FAST)._induce(x, means, labels, 5, seed=3)
    cost, budget, _ = seen[0]
    assert budget == budget_gib * 2**30
    assert cost == {c: induction_peak_bytes(n, 30) for c, n in enumerate([320, 160, 80, 40, 20])}
    assert starts[0] == cost[0]  # the largest class, alone over budget
    assert all(f <= budget for f in starts[1:])


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), "4", True])
def test_a_bad_budget_is_a_one_line_bench_error(value):
    with pytest.raises(BenchError) as err:
        OptPrior(induction_memory_gib=value)
    message = str(err.value).split("\n  In call to configurable")[
        0
    ]  # gin's context line; the CLI shows line 1
    assert "optprior.induction_memory_gib" in message and repr(value) in message and "\n" not in message
