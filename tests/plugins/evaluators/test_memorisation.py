"""Memorisation evaluator: exact NN distances, copies vs fresh draws, and the evaluator on a fake cell."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from bench.context import CellContext
from bench.data.targets import ClassTarget
from bench.dataset import Split
from bench.errors import BenchError
from bench.evaluators.memorisation import SPACES, Memorisation, copy_statistics, nearest_distances

Q = 0.05


def test_nearest_distances_match_sklearn_across_chunks():
    rng = np.random.default_rng(0)
    ref, queries = rng.standard_normal((37, 6)), rng.standard_normal((23, 6))
    expected = NearestNeighbors(n_neighbors=1).fit(ref).kneighbors(queries)[0][:, 0]
    np.testing.assert_allclose(
        nearest_distances(torch.from_numpy(queries), ref, chunk=5), expected, rtol=1e-10
    )
    assert np.all(nearest_distances(torch.from_numpy(ref[[3, 30]]), ref, chunk=4) == 0.0)


def _gaussian_classes(n_per_class, rng, dim=5):
    """Two classes, N(0, I) and N(3 e_0, 2^2 I), n_per_class rows each."""
    y = np.repeat([0, 1], n_per_class)
    x = rng.standard_normal((len(y), dim)) * np.where(y == 1, 2.0, 1.0)[:, None]
    x[:, 0] += 3.0 * y
    return x, y


def _statistics(train, synthetic, test, classes=(0, 1)):
    (xt, _), (xs, ys), (xq, yq) = train, synthetic, test
    d_syn = nearest_distances(torch.from_numpy(xs), xt)
    d_test = nearest_distances(torch.from_numpy(xq), xt)
    return copy_statistics(d_syn, ys, d_test, yq, list(classes), Q)


def test_exact_copies_are_all_near_copies_at_ratio_zero():
    rng = np.random.default_rng(1)
    train, test = _gaussian_classes(200, rng), _gaussian_classes(300, rng)
    pick = rng.choice(400, 150)
    s = _statistics(train, (train[0][pick], train[1][pick]), test)
    assert s["copy_share"] == 1.0 and s["nn_ratio"] == 0.0


def test_fresh_draws_like_the_test_set_give_share_q_and_ratio_one():
    rng = np.random.default_rng(2)
    train, test = _gaussian_classes(300, rng), _gaussian_classes(2000, rng)
    synthetic = _gaussian_classes(2000, rng)
    s = _statistics(train, synthetic, test)
    # binomial sd of the share ~ sqrt(q (1 - q) / 4000) = 0.0035, plus the thresholds' own noise
    assert s["copy_share"] == pytest.approx(Q, abs=0.02)
    assert s["nn_ratio"] == pytest.approx(1.0, abs=0.06)
    assert set(s["per_class"]) == {0, 1} and s["skipped"] == []


def test_the_share_is_per_class_so_a_different_class_mix_still_gives_q():
    rng = np.random.default_rng(3)
    train, test = _gaussian_classes(300, rng), _gaussian_classes(2000, rng)
    x, y = _gaussian_classes(3000, rng)
    keep = (y == 1) | (np.arange(len(y)) % 10 == 0)  # class 1 dominates the synthetic set
    s = _statistics(train, (x[keep], y[keep]), test)
    assert s["copy_share"] == pytest.approx(Q, abs=0.02)


def test_classes_without_test_samples_are_skipped():
    d = np.array([1.0, 2.0, 3.0])
    s = copy_statistics(d, np.array([0, 0, 1]), np.array([1.5, 2.5]), np.array([0, 0]), [0, 1], 0.5)
    assert s["skipped"] == [1] and s["per_class"][0]["n_synthetic"] == 2
    assert s["copy_share"] == 0.5  # threshold 2.0: 1.0 below, 2.0 not
    assert s["nn_ratio"] == pytest.approx(np.median([1.0 / 2.0, 2.0 / 2.0]))


class _Flatten:
    """A stand-in feature extractor: features are the flattened images."""

    def embed(self, x):
        return torch.as_tensor(x).reshape(len(x), -1).double().numpy()


def _image_cell(tmp_path, synthetic_rows):
    """Three classes of 2x3x3 'images'; class 2 gets no synthetic samples in the plan."""
    rng = np.random.default_rng(4)
    x, y = (np.concatenate(parts) for parts in zip(*[_gaussian_classes(400, rng, dim=18) for _ in range(2)]))
    y = y + 2 * (np.arange(len(y)) >= 800)  # classes 0, 1, 2, 3 -> keep 0..2
    keep = y < 3
    x, y = torch.tensor(x[keep], dtype=torch.float32).reshape(-1, 2, 3, 3), torch.tensor(y[keep])
    train_rows, test_rows = torch.arange(len(y)) % 3 == 0, torch.arange(len(y)) % 3 != 0
    train, test = Split(x[train_rows], y[train_rows]), Split(x[test_rows], y[test_rows])
    synthetic = synthetic_rows(train, test)
    dataset = SimpleNamespace(n_classes=3, class_names=["a", "b", "c"], kind="image")
    targets = [
        ClassTarget("a", 10, 0.1, "LT", 5),
        ClassTarget("b", 10, 0.1, "LT", 5),
        ClassTarget("c", 100, 1.0, "Head", 0),
    ]
    return CellContext(
        dataset,
        train,
        test,
        synthetic,
        out_dir=tmp_path / "cell",
        seed=0,
        targets=targets,
        extractor=lambda: _Flatten(),
    )


def test_evaluator_flags_copies_and_writes_details(tmp_path):
    copies = lambda train, test: train.subset(train.y < 2)  # noqa: E731
    m = Memorisation().evaluate(_image_cell(tmp_path, copies))
    assert m == {"memo_copy_share": 1.0, "memo_copy_share_expected": Q, "memo_nn_ratio": 0.0}
    assert set(m) == set(Memorisation.higher_is_better) | {
        "memo_copy_share_expected"
    }  # a reference: no direction
    saved = json.loads((tmp_path / "cell" / "memorisation.json").read_text())
    assert saved["classes"] == [0, 1] and set(saved["per_class"]) == {"a", "b"}


def test_evaluator_on_held_out_images_matches_pixels_and_features(tmp_path):
    held_out = lambda train, test: test.subset(test.y < 2)  # noqa: E731
    cell = _image_cell(tmp_path, held_out)
    by_features = Memorisation().evaluate(cell)
    by_pixels = Memorisation(space="pixels").evaluate(cell)
    assert by_features == pytest.approx(by_pixels)
    # the synthetic set *is* the augmented classes' test set: each class's own q-quantile, ratio 1
    nn = NearestNeighbors(n_neighbors=1).fit(cell.train.x.reshape(len(cell.train), -1).numpy())
    below = []
    for c in (0, 1):
        d = nn.kneighbors(cell.test.x[cell.test.y == c].reshape(-1, 18).numpy())[0][:, 0]
        below.extend(d < np.quantile(d, Q))
    assert by_features["memo_copy_share"] == pytest.approx(np.mean(below)) and abs(np.mean(below) - Q) < 0.01
    assert by_features["memo_nn_ratio"] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("space", SPACES)
def test_an_empty_synthetic_set_gives_nan_not_a_failure(tmp_path, space):
    """A plan that augments no class (a small real dataset) samples nothing: NaN, written, no crash."""
    nothing = lambda train, test: train.subset(train.y > 99)  # noqa: E731
    m = Memorisation(space=space).evaluate(_image_cell(tmp_path, nothing))
    assert (
        np.isnan(m["memo_copy_share"]) and np.isnan(m["memo_nn_ratio"]) and m["memo_copy_share_expected"] == Q
    )
    assert json.loads((tmp_path / "cell" / "memorisation.json").read_text())["per_class"] == {}


@pytest.mark.parametrize("kwargs", [dict(space="latents"), dict(quantile=0.0), dict(quantile=1.5)])
def test_bad_configuration_is_rejected(kwargs):
    with pytest.raises(BenchError, match="memorisation"):
        Memorisation(**kwargs)
