"""Displacement geometry statistics against hand-built cases and a plain numpy reference."""

import math

import numpy as np
import pytest
import torch

import bench.priors.geometry
from bench.errors import BenchError
from bench.priors.geometry import displacement_geometry


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
    return {"alignment": alignment, "radial_std": sizes @ stds / len(d), "radial_cv": sizes @ cvs / len(d),
            "path_length": rho.mean(), "angular_overlap": np.mean(overlap)}


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
    assert displacement_geometry(orthogonal, group, prototypes=u)["alignment"] == pytest.approx(0.0, abs=1e-12)
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
    monkeypatch.setattr(bench.priors.geometry, "_CHUNK_ELEMENTS", 50)  # chunks of 7 rows
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
