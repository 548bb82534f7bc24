"""kNN purity against a brute-force reference, known partitions and the analytic chance level."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.context import CellContext
from bench.dataset import Dataset, Split
from bench.evaluators.knn_purity import KNNPurity, chance_purity, knn_purity, random_partition_purity
from bench.registry import evaluators


def _clusters(sizes: list[list[int]], dim: int = 3, seed: int = 0):
    """Tight blobs, one per (class, subclass), 50 apart: the true partition is obvious."""
    rng = np.random.default_rng(seed)
    x, y, sub = [], [], []
    for c, subclass_sizes in enumerate(sizes):
        for s, n in enumerate(subclass_sizes):
            x.append(rng.standard_normal((n, dim)) + 50.0 * rng.standard_normal(dim))
            y += [c] * n
            sub += [s] * n
    return np.concatenate(x), np.array(y), np.array(sub)


def _reference_purity(x, y, sub, k):
    """Brute force: full distance matrix, same-class others sorted by distance."""
    values = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(np.unique(sub[rows])) < 2:
            continue
        for i in rows:
            others = rows[rows != i]
            nearest = others[np.argsort(np.linalg.norm(x[others] - x[i], axis=1))[:k]]
            values.append(np.mean(sub[nearest] == sub[i]))
    return float(np.mean(values))


def _expected_random(y, sub):
    """Pooled expectation of a random partition: sum_k (n_k - 1)/(n - 1) * n_k/n per class, weighted by n."""
    total, weight = 0.0, 0
    for c in np.unique(y):
        s = sub[y == c]
        n, n_k = len(s), np.bincount(s)
        n_k = n_k[n_k > 0]
        if len(n_k) >= 2:
            total += n * np.sum((n_k - 1) / (n - 1) * n_k / n)
            weight += n
    return total / weight


def test_purity_matches_a_brute_force_reference():
    rng = np.random.default_rng(1)
    # class 2 (6 samples) has fewer than k + 1 samples; class 3 has one subclass and is skipped
    y = np.repeat([0, 1, 2, 3], [40, 25, 6, 15])
    sub = np.concatenate(
        [rng.integers(0, 3, 40), rng.integers(0, 2, 25), [0, 1, 0, 1, 1, 0], np.zeros(15, int)]
    )
    x = rng.standard_normal((len(y), 4))
    for k in (1, 5, 10):
        assert knn_purity(x, y, sub, k=k) == pytest.approx(_reference_purity(x, y, sub, k), rel=1e-12)
    assert 0.2 < knn_purity(x, y, sub, k=10) < 0.8  # random data: neither extreme


def test_true_partition_of_separated_clusters_is_pure_and_random_is_at_chance():
    x, y, sub = _clusters([[40, 40], [30, 20, 15]])
    assert knn_purity(x, y, sub, k=10) == 1.0
    draws = random_partition_purity(x, y, sub, k=10, n_draws=300, rng=np.random.default_rng(0))
    assert draws.shape == (300,)
    assert draws.mean() == pytest.approx(_expected_random(y, sub), abs=0.01)
    two_equal = random_partition_purity(x[y == 0], y[y == 0], sub[y == 0], 10, 300, np.random.default_rng(1))
    assert two_equal.mean() == pytest.approx(39 / 79, abs=0.01)  # (n_k - 1)/(n - 1), about 0.5
    assert chance_purity(sub[y == 0]) == pytest.approx(39 / 79)
    assert chance_purity(sub[y == 1]) == pytest.approx(_expected_random(y[y == 1], sub[y == 1]))


def test_random_draws_are_seeded_and_vary():
    x, y, sub = _clusters([[30, 10], [12, 12]])
    a = random_partition_purity(x, y, sub, 5, 20, np.random.default_rng(3))
    np.testing.assert_array_equal(a, random_partition_purity(x, y, sub, 5, 20, np.random.default_rng(3)))
    assert a.std() > 0
    assert np.isnan(knn_purity(x, y, np.zeros_like(sub), k=5))  # no class with two subclasses


class _Tiny(Dataset):
    class_names = ["a", "b", "c"]


def _cell(tmp_path: Path, assignment, latents=True, extractor=True):
    x, y, sub = _clusters([[30, 30], [25, 25], [20]], dim=4)
    train = Split(torch.tensor(x, dtype=torch.float32), torch.tensor(y), torch.tensor(sub))
    embedder = SimpleNamespace(embed=lambda v: v.reshape(len(v), -1).numpy())
    prior = None if assignment is None else SimpleNamespace(tensors=assignment(sub))
    return CellContext(
        _Tiny(),
        train,
        train,
        train,
        tmp_path,
        seed=0,
        latents=torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 2, 2) if latents else None,
        prior=prior,
        extractor=(lambda: embedder) if extractor else None,
    )


def test_evaluator_reports_both_spaces_and_details(tmp_path):
    evaluator = KNNPurity(k=10, n_draws=100)
    metrics = evaluator.evaluate(_cell(tmp_path, lambda s: {"assignment": torch.tensor(s)}))
    spaces = ("features", "latent")
    names = ("knn_purity", "knn_purity_random", "knn_purity_gap", "knn_purity_gap_std")
    assert set(metrics) == {f"{n}/{s}" for n in names for s in spaces}
    assert set(metrics) <= set(evaluator.higher_is_better)
    direction = evaluator.higher_is_better
    assert direction["knn_purity_gap/latent"] and not direction["knn_purity_random/latent"]
    for s in spaces:  # latents are the same points here, so both spaces agree
        assert metrics[f"knn_purity/{s}"] == 1.0
        assert metrics[f"knn_purity_random/{s}"] == pytest.approx(
            (60 * 29 / 59 + 50 * 24 / 49) / 110, abs=0.01
        )
        assert metrics[f"knn_purity_gap/{s}"] == pytest.approx(1.0 - metrics[f"knn_purity_random/{s}"])
        assert 0 < metrics[f"knn_purity_gap_std/{s}"] < 0.05
    details = json.loads((tmp_path / "knn_purity.json").read_text())
    assert [row["class"] for row in details["spaces"]["latent"]] == ["a", "b"]  # "c" has one subclass
    assert details["spaces"]["features"][0]["chance"] == pytest.approx(29 / 59)


def test_evaluator_latent_pca_and_missing_spaces(tmp_path):
    cell = _cell(tmp_path, lambda s: {"assignment": torch.tensor(s)}, extractor=False)
    cell.latents = (
        torch.tensor(np.random.default_rng(0).standard_normal((len(cell.train), 64)), dtype=torch.float32)
        + 40.0 * cell.prior.tensors["assignment"][:, None]
    )
    metrics = KNNPurity(pca_dim=5, n_draws=100, pca_fit_rows=40).evaluate(cell)  # PCA fitted on a subsample
    assert set(metrics) == {
        "knn_purity/latent",
        "knn_purity_random/latent",
        "knn_purity_gap/latent",
        "knn_purity_gap_std/latent",
    }
    assert metrics["knn_purity/latent"] == 1.0


def test_evaluator_needs_induced_subclasses(tmp_path):
    assert KNNPurity().evaluate(_cell(tmp_path, None)) == {}
    assert KNNPurity().evaluate(_cell(tmp_path, lambda s: {"class_mean": torch.zeros(3, 4)})) == {}
    single = KNNPurity().evaluate(
        _cell(tmp_path, lambda s: {"assignment": torch.zeros(len(s), dtype=torch.int64)})
    )
    assert single == {} and not (tmp_path / "knn_purity.json").exists()


def test_knn_purity_is_the_registered_plugin():
    assert evaluators.get("knn_purity") is KNNPurity


@pytest.mark.slow
def test_vector_cells_measure_purity_in_latent_space_only(tmp_path, bench_cli):
    # domain features come from an image CNN: a vector cell has none, and must not try to build one
    out = bench_cli(
        "run",
        "datasets=[synthetic2d]",
        "methods=[optprior_sub]",
        "seeds=[0]",
        "synthetic2d.n_max=400",
        "train.steps=20",
        "sample.nfe=2",
        "pipeline.evaluators=[swd,knn_purity]",
        f"results_dir={tmp_path / 'res'}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    rec = json.loads(
        (tmp_path / "res" / "quick" / "synthetic2d" / "optprior_sub" / "seed0" / "record.json").read_text()
    )
    assert "knn_purity/latent" in rec["metrics"] and not any("/features" in k for k in rec["metrics"])
