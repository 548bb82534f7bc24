"""Displacement geometry statistics against hand-built cases and a plain numpy reference."""

import math

import numpy as np
import pytest
import torch

import bench.priors.displacement
from bench.errors import BenchError
from bench.priors.displacement import displacement_geometry


def _numpy_reference(d: np.ndarray, group: np.ndarray, parent: np.ndarray):
    """The same statistics written as explicit per-sample and per-group loops."""
    n_groups = len(parent)
    rho = np.linalg.norm(d, axis=1)
    dhat = d / rho[:, None]
    units = []
    for g in range(n_groups):
        mean = dhat[group == g].mean(0)
        units.append(mean / np.linalg.norm(mean))
    units = np.array(units)
    alignment = np.mean([dhat[i] @ units[group[i]] for i in range(len(d))])
    sizes = np.array([(group == g).sum() for g in range(n_groups)])
    stds = np.array([rho[group == g].std() for g in range(n_groups)])
    cvs = np.array([rho[group == g].std() / rho[group == g].mean() for g in range(n_groups)])
    overlap = []
    for i in range(len(d)):
        siblings = [g for g in range(n_groups) if g != group[i] and parent[g] == parent[group[i]]]
        if siblings:
            overlap.append(max(dhat[i] @ units[g] for g in siblings))
    return {
        "alignment": alignment,
        "radial_std": sizes @ stds / len(d),
        "radial_cv": sizes @ cvs / len(d),
        "path_length": rho.mean(),
        "angular_overlap": np.mean(overlap),
    }


def test_displacements_along_the_prototype_are_aligned():
    u = torch.tensor([[3.0, 4.0, 0.0]])  # not unit: the function normalises prototypes
    d = torch.tensor([[0.6, 0.8, 0.0], [3.0, 4.0, 0.0], [0.06, 0.08, 0.0]])
    got = displacement_geometry(d, torch.zeros(3, dtype=torch.long), prototypes=u)
    assert got["alignment"] == pytest.approx(1.0, abs=1e-12)
    assert got["path_length"] == pytest.approx((1.0 + 5.0 + 0.1) / 3)


def test_orthogonal_and_opposite_displacements():
    u = torch.tensor([[1.0, 0.0]])
    group = torch.zeros(4, dtype=torch.long)
    orthogonal = torch.tensor([[0.0, 2.0], [0.0, -1.0], [0.0, 5.0], [0.0, 0.5]])
    assert displacement_geometry(orthogonal, group, prototypes=u)["alignment"] == pytest.approx(
        0.0, abs=1e-12
    )
    opposite = torch.tensor([[-2.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-3.0, 0.0]])
    assert displacement_geometry(opposite, group, prototypes=u)["alignment"] == pytest.approx(-0.5)


def test_radial_statistics_equal_numpy_on_known_lengths():
    rho = np.array([1.0, 2.0, 3.0, 10.0, 10.0, 4.0, 8.0, 6.0, 5.0])
    group = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    rng = np.random.default_rng(0)
    directions = rng.standard_normal((9, 4))
    d = directions / np.linalg.norm(directions, axis=1, keepdims=True) * rho[:, None]
    got = displacement_geometry(torch.from_numpy(d).float(), torch.from_numpy(group))
    parts = [rho[group == g] for g in range(3)]
    weights = np.array([len(p) for p in parts]) / 9
    assert got["radial_std"] == pytest.approx(weights @ [p.std() for p in parts], rel=1e-6)
    assert got["radial_cv"] == pytest.approx(weights @ [p.std() / p.mean() for p in parts], rel=1e-6)
    assert got["path_length"] == pytest.approx(rho.mean(), rel=1e-6)
    assert got["n"] == 9
    assert "angular_overlap" not in got  # no parent classes given


def test_angular_overlap_of_two_subclasses_at_a_known_angle():
    theta = math.radians(60)
    u0, u1 = np.array([1.0, 0.0, 0.0]), np.array([math.cos(theta), math.sin(theta), 0.0])
    far = np.array([0.0, 0.0, 1.0])
    # Groups 0 and 1 are siblings (class 0); group 2 (class 1) points almost along u0 but belongs
    # to another class, so it must not count as an overlap for group 0.
    prototypes = torch.from_numpy(np.stack([u0, u1, 0.1 * far + u0]))
    d = torch.from_numpy(np.stack([2 * u0, 0.5 * u0, 3 * u1, far]))
    group, parent = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 0, 1])
    got = displacement_geometry(d, group, prototypes=prototypes, parent=parent)
    # Samples of groups 0 and 1 see their sibling at cos 60 = 0.5; group 2's class has no sibling.
    assert got["angular_overlap"] == pytest.approx(0.5, abs=1e-12)
    # Pulling group 1's prototype further away from group 0 lowers the overlap.
    prototypes[1] = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    lower = displacement_geometry(d, group, prototypes=prototypes, parent=parent)
    assert lower["angular_overlap"] < got["angular_overlap"]


def test_no_class_with_two_groups_omits_overlap():
    d = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    got = displacement_geometry(d, torch.tensor([0, 0, 1, 1, 2, 2]), parent=torch.tensor([0, 1, 2]))
    assert "angular_overlap" not in got


def test_random_case_matches_the_numpy_reference_also_when_chunked(monkeypatch):
    rng = np.random.default_rng(2)
    group = rng.integers(0, 5, 300)
    d = rng.standard_normal((300, 7)) + rng.standard_normal((5, 7))[group] * 2
    parent = np.array([0, 0, 0, 1, 1])
    expected, original = _numpy_reference(d, group, parent), d.copy()
    args = (torch.from_numpy(d), torch.from_numpy(group))
    whole = displacement_geometry(*args, parent=torch.from_numpy(parent))
    monkeypatch.setattr(bench.priors.displacement, "_CHUNK_ELEMENTS", 50)  # chunks of 7 rows
    chunked = displacement_geometry(*args, parent=torch.from_numpy(parent))
    for key, value in expected.items():
        assert whole[key] == pytest.approx(value, rel=1e-10)
        assert chunked[key] == pytest.approx(value, rel=1e-10)
    assert np.array_equal(d, original)  # float64 input (sharing d's memory) is never divided in place


def test_zero_displacement_does_not_give_nan():
    d = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    got = displacement_geometry(d, torch.zeros(3, dtype=torch.long))
    assert all(math.isfinite(v) for v in got.values())
    assert got["alignment"] == pytest.approx(2 / 3)  # the zero row has no direction: cosine 0


def test_mismatched_inputs_raise_bench_error():
    d = torch.zeros(4, 2)
    with pytest.raises(BenchError):
        displacement_geometry(d, torch.zeros(3, dtype=torch.long))
    with pytest.raises(BenchError):
        displacement_geometry(d, torch.tensor([0, 1, 2, 2]), prototypes=torch.ones(2, 2))


# --- claim (b): several sources by one held-out prototype rule (bench.priors.source_geometry) ---

from bench.priors.source_geometry import draw_seed, held_out_geometry, matched_spread, matched_spreads  # noqa: E402
from bench.priors.source_opt import normal_like  # noqa: E402


def test_matched_spread_at_the_class_mean_is_the_closed_form():
    """x = m_c (r = 0): ||r - s eps|| = s ||eps||, so s = target / mean ||eps||."""
    eps = np.random.default_rng(0).standard_normal((3, 50, 16))
    c = (eps**2).sum(2)
    s, reached = matched_spread(np.zeros(50), np.zeros((3, 50)), c, 7.0)
    assert reached and s == pytest.approx(7.0 / np.sqrt(c).mean(), rel=1e-10)


def test_matched_source_path_length_equals_the_target_per_class():
    """s_c from matched_spreads, put back into explicit displacements x - m_c - s_c eps on the same
    draws, gives each class the target source's mean path length, recomputed here in numpy."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    x = torch.randn(3, 12, generator=g)[labels] * 4 + torch.randn(90, 12, generator=g)
    means = torch.stack([x[labels == c].mean(0) for c in range(3)])
    mu, sigma = torch.randn(3, 12, generator=g), 0.5 + torch.rand(3, 12, generator=g)
    spreads, unreached, targets = matched_spreads(x, labels, means, (mu, sigma), labels, seed=4, draws=3)
    assert unreached == []
    eps = np.stack([normal_like(x, draw_seed(4, j)).numpy() for j in (1, 2, 3)]).astype(np.float64)
    xn, yn = x.numpy().astype(np.float64), labels.numpy()
    target_rho = np.linalg.norm(xn - mu.numpy()[yn] - sigma.numpy()[yn] * eps, axis=2)
    matched_rho = np.linalg.norm(xn - means.numpy()[yn] - np.array(spreads)[yn, None] * eps, axis=2)
    for c in range(3):
        assert targets[c] == pytest.approx(target_rho[:, yn == c].mean(), rel=1e-6)
        assert matched_rho[:, yn == c].mean() == pytest.approx(targets[c], rel=1e-6)


def test_a_target_shorter_than_any_isotropic_source_gives_zero_and_says_so():
    rng = np.random.default_rng(1)
    a = rng.uniform(4, 9, 40)  # |r|^2: the spread-0 source already has mean path ~2.5
    eps = rng.standard_normal((2, 40, 8))
    r = rng.standard_normal((40, 8))
    r *= np.sqrt(a)[:, None] / np.linalg.norm(r, axis=1, keepdims=True)
    s, reached = matched_spread(a, (r * eps).sum(2), (eps**2).sum(2), 0.5)
    assert (s, reached) == (0.0, False)


def test_held_out_prototypes_give_alignment_one_for_parallel_displacements():
    """A source with zero spread at the origin: every displacement is a positive multiple of one
    direction, so every draw's alignment is 1 and the SE over draws is 0."""
    v = torch.tensor([1.0, 2.0, -2.0])
    x = torch.linspace(0.5, 3.0, 20).unsqueeze(1) * v
    group = torch.zeros(20, dtype=torch.long)
    got = held_out_geometry(
        x,
        group,
        torch.zeros(1, dtype=torch.long),
        {"still": (torch.zeros(1, 3), torch.zeros(1, 1))},
        seed=0,
        draws=3,
    )["still"]
    assert got["alignment"] == pytest.approx(1.0, abs=1e-12) and got["alignment_se"] == pytest.approx(
        0, abs=1e-12
    )
    assert got["draws"] == 3 and got["prototypes"] == "held_out"


def test_held_out_prototypes_do_not_reward_pure_noise():
    """Displacements that are pure noise (x = 0, N(0, I) source) have no direction: a prototype
    from an independent draw gives alignment 0 up to its SE, while the in-sample mean direction
    of a small group fits its own noise (alignment ~ 1 / sqrt(n_g) > 0)."""
    x = torch.zeros(200, 32)
    group = torch.arange(200) % 20  # 20 groups of 10
    parent = torch.arange(20) // 2
    got = held_out_geometry(x, group, parent, {"standard": (None, None)}, seed=1, draws=8)["standard"]
    assert abs(got["alignment"]) < 4 * got["alignment_se"] + 1e-3
    in_sample = displacement_geometry(-normal_like(x, draw_seed(1, 1)), group)["alignment"]
    assert in_sample > 0.2 > abs(got["alignment"]) + 0.1


def test_standard_error_over_draws_shrinks_as_one_over_root_draws():
    g = torch.Generator().manual_seed(2)
    group = torch.arange(60) % 3
    x = torch.randn(3, 10, generator=g)[group] * 3
    sources = {"standard": (None, None)}
    parent = torch.zeros(3, dtype=torch.long)
    few = held_out_geometry(x, group, parent, sources, seed=3, draws=16)["standard"]
    many = held_out_geometry(x, group, parent, sources, seed=3, draws=256)["standard"]
    for stat in ("path_length", "radial_std", "alignment"):
        assert 2.5 < few[f"{stat}_se"] / many[f"{stat}_se"] < 6.5, stat  # sqrt(256 / 16) = 4
