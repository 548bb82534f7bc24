"""ODE solvers against closed-form solutions; seeded noise independent of batch size."""

import math
from types import SimpleNamespace

import pytest
import torch

import gin
from bench.config.sample import SampleConfig, SourceSubset
from bench.errors import BenchError
from bench.method import Condition, Method
from bench.pipeline import runner
from bench.pipeline.sampler import draw_sources, euler, generate, heun, sample_noise


def linear_field(a: float):
    """dx/dt = a x, whose exact flow from t=0 to 1 is x0 * exp(a)."""
    return lambda x, t: a * x


@pytest.mark.parametrize("solver,order", [(euler, 1), (heun, 2)])
def test_solver_converges_at_its_order(solver, order):
    x0 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    exact = x0 * math.exp(0.7)
    err = [float((solver(linear_field(0.7), x0, n) - exact).abs().max()) for n in (8, 16, 32)]
    ratios = [err[i] / err[i + 1] for i in range(2)]
    assert all(abs(math.log2(r) - order) < 0.2 for r in ratios), (err, ratios)


def test_time_dependent_field_is_integrated_from_zero_to_one():
    """dx/dt = 2t gives x1 = x0 + 1; Heun is exact for a field linear in t."""
    x0 = torch.zeros(3, 1, dtype=torch.float64)

    def field(x, t):
        return 2 * t.expand(x.shape[0]).reshape(-1, 1)

    assert torch.allclose(heun(field, x0, 4), x0 + 1)
    assert abs(float(euler(field, x0, 100)[0]) - 1.0) < 0.02


def test_heun_rejects_odd_nfe():
    with pytest.raises(BenchError):
        heun(linear_field(1.0), torch.zeros(1, 1), 3)


def test_noise_depends_on_seed_class_and_index_only():
    eps_a, u_a = sample_noise(0, [0, 0, 1], [0, 1, 0], (2,))
    eps_b, u_b = sample_noise(0, [1], [0], (2,))
    assert torch.equal(eps_a[2], eps_b[0]) and torch.equal(u_a[2], u_b[0])
    assert not torch.equal(eps_a[0], eps_a[1])
    assert not torch.equal(sample_noise(1, [0], [0], (2,))[0], eps_a[:1])


class ScaledIdentity(torch.nn.Module):
    """A toy backbone whose velocity depends on the class token: v = x * token."""

    def forward(self, x, t, tokens):
        return x * tokens.float()


def test_generated_set_does_not_depend_on_batch_size():
    method = Method()
    method.setup(n_classes=3)
    outs = [
        generate(method, ScaledIdentity(), [4, 2, 3], (2,), seed=5, cfg=SampleConfig(nfe=8, batch_size=b))
        for b in (1, 4, 100)
    ]
    for out in outs[1:]:
        assert torch.equal(out["y"], outs[0]["y"])
        assert torch.allclose(out["z"], outs[0]["z"], atol=1e-6)
    assert outs[0]["y"].tolist() == [0] * 4 + [1] * 2 + [2] * 3


@pytest.mark.parametrize(
    "solver,steps,growth",
    [
        (euler, 8, lambda ah: 1 + ah),  # one Euler step multiplies x by (1 + a h)
        (heun, 4, lambda ah: 1 + ah + ah**2 / 2),  # one Heun step by (1 + a h + (a h)^2 / 2)
    ],
)
def test_trace_sees_every_state_from_source_to_result(solver, steps, growth):
    x0, a = torch.tensor([[1.0, -2.0]], dtype=torch.float64), 0.7
    states = []
    x1 = solver(linear_field(a), x0, 8, trace=states.append)
    assert len(states) == steps + 1 and torch.equal(states[0], x0) and torch.equal(states[-1], x1)
    for k, state in enumerate(states):
        assert torch.allclose(state, x0 * growth(a / steps) ** k)
    assert torch.equal(solver(linear_field(a), x0, 8), x1)  # tracing changes nothing


@pytest.mark.parametrize("solver,steps", [("euler", 8), ("heun", 4)])
def test_keep_paths_stores_the_first_paths_of_each_class_and_leaves_z_unchanged(solver, steps):
    method = Method()
    method.setup(n_classes=3)

    def run(keep, batch):
        return generate(
            method,
            ScaledIdentity(),
            [4, 1, 3],
            (2,),
            seed=5,
            cfg=SampleConfig(solver=solver, nfe=8, batch_size=batch, keep_paths=keep),
        )

    plain, kept = run(0, 3), run(2, 3)
    assert set(plain) == {"z", "y"} and set(kept) == {"z", "y", "paths", "paths_y"}
    assert torch.equal(plain["z"], kept["z"]) and torch.equal(plain["y"], kept["y"])
    assert kept["paths"].shape == (5, steps + 1, 2) and kept["paths_y"].tolist() == [0, 0, 1, 2, 2]
    rows = [0, 1, 4, 5, 6]  # the first two of class 0 (rows 0-3), the only one of class 1, two of class 2
    assert torch.equal(kept["paths"][:, -1], kept["z"][rows])
    eps, _ = sample_noise(5, [0, 0, 1, 2, 2], [0, 1, 0, 0, 1], (2,))
    assert torch.equal(kept["paths"][:, 0], eps)  # fm's source is the noise itself
    assert torch.allclose(run(2, 100)["paths"], kept["paths"], atol=1e-6)  # whatever the batch size


def test_keep_paths_must_be_a_non_negative_integer():
    with pytest.raises(BenchError, match="sample.keep_paths"):
        SampleConfig(keep_paths=-1)


class SubclassShift(Method):
    """A source that depends on the class and on a subclass drawn from u, so x0 is not eps."""

    def sampling_condition(self, labels, u):
        return Condition(labels, (u * 2).long())

    def sample_source(self, cond, eps):
        return 0.5 * eps + cond.label[:, None] + 10.0 * cond.subclass[:, None]


@pytest.mark.parametrize("batch", [1, 3, 100])
def test_source_draws_are_the_points_the_ode_starts_from(batch):
    method = SubclassShift()
    method.setup(n_classes=3)
    counts, cfg = [3, 2, 4], SampleConfig(nfe=4, batch_size=batch, keep_paths=10)
    flowed, source = (
        generate(method, ScaledIdentity(), counts, (2,), 5, cfg),
        draw_sources(method, counts, (2,), 5, cfg),
    )
    assert torch.equal(source["y"], flowed["y"]) and torch.equal(source["subclass"], flowed["subclass"])
    assert torch.equal(source["z"], flowed["paths"][:, 0])  # every row's path starts at its source draw
    assert not torch.allclose(source["z"], flowed["z"])  # ... and the flow moved it
    # x0 depends on (seed, class, index) only: a larger set starts with the smaller set's draws
    larger = draw_sources(method, [5, 2, 6], (2,), 5, cfg)
    for c, n in enumerate(counts):
        assert torch.equal(larger["z"][larger["y"] == c][:n], source["z"][source["y"] == c])


def test_source_subset_keeps_each_class_first_draws_up_to_the_cap():
    assert SourceSubset(max_per_class=3).counts([5, 2, 0, 3]) == [3, 2, 0, 3]
    assert SourceSubset(max_per_class=None).counts([5000, 2]) == [5000, 2]
    with pytest.raises(BenchError, match=r"source.max_per_class=1: use an integer >= 2"):
        SourceSubset(max_per_class=1)


@pytest.fixture
def source_cap():
    """`source.max_per_class = 3` bound in gin for one test."""
    gin.clear_config()
    gin.parse_config("source.max_per_class = 3")
    yield
    gin.clear_config()


def test_source_set_scores_the_scored_sets_first_draws_of_each_class(source_cap):
    method = SubclassShift()
    method.setup(n_classes=3)
    cell = SimpleNamespace(
        method=method,
        dataset=SimpleNamespace(n_classes=3),
        spec=SimpleNamespace(seed=5, label="c"),
        config=SimpleNamespace(sample=SampleConfig(nfe=4, batch_size=2), source=SourceSubset()),
    )
    scored = {"y": torch.tensor([0] * 5 + [1] * 2 + [2] * 4)}  # the generative set's labels
    subset = runner.source_set(cell, (2,), scored)
    assert torch.bincount(subset["y"], minlength=3).tolist() == [3, 2, 3]
    full = draw_sources(method, [5, 2, 4], (2,), 5, cell.config.sample)  # what @source scored before the cap
    for c in range(3):  # no random choice: the first draws of each class, i.e. the scored set's first x0
        mine = subset["z"][subset["y"] == c]
        assert torch.equal(mine, full["z"][full["y"] == c][: len(mine)])
        assert torch.equal(
            subset["subclass"][subset["y"] == c], full["subclass"][full["y"] == c][: len(mine)]
        )
    assert torch.equal(runner.source_set(cell, (2,), [1, 2, 9])["y"], torch.tensor([0, 1, 1, 2, 2, 2]))
