"""The embedded datasets: long-tail profile, determinism, balanced held-out splits, ground truth."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from bench.data.longtail import allocate, exponential_profile
from bench.datasets.digits_lt import DigitsLT
from bench.datasets.synthetic2d import Synthetic2D
from bench.errors import BenchError
from bench.registry import datasets


# -- the shared profile ---------------------------------------------------------------------
def test_exponential_profile_matches_hand_computed_counts():
    # 2000 * 100 ** (-c / 7): 2000, 1035.9, 536.5, 277.9, 143.9, 74.6, 38.6, 20.0
    assert exponential_profile(2000, 8, 100) == [2000, 1036, 537, 278, 144, 75, 39, 20]
    assert exponential_profile(50, 1, 10) == [50]


def test_exponential_profile_rejects_nonsense():
    with pytest.raises(BenchError):
        exponential_profile(100, 5, 0.5)


def test_allocate_gives_every_subclass_a_sample_and_sums_exactly():
    weights = np.array([8, 4, 2, 1]) / 15
    assert allocate(4, weights) == [1, 1, 1, 1]
    counts = allocate(1000, weights)
    assert sum(counts) == 1000 and min(counts) >= 1
    np.testing.assert_allclose(np.array(counts) / 1000, weights, atol=0.005)
    with pytest.raises(BenchError):
        allocate(3, weights)


# -- synthetic2d ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth():
    return Synthetic2D()


def test_synthetic2d_is_the_registered_plugin():
    assert datasets.get("synthetic2d") is Synthetic2D


def test_synthetic2d_deterministic_by_data_seed(synth):
    again, other = Synthetic2D(seed=0).load("train"), Synthetic2D(seed=1).load("train")
    train = synth.load("train")
    for a, b in ((train.x, again.x), (train.y, again.y), (train.subclass, again.subclass)):
        assert torch.equal(a, b)
    assert not torch.allclose(train.x, other.x)
    # the test split does not depend on whether train was drawn first
    assert torch.equal(Synthetic2D().load("test").x, synth.load("test").x)


def test_synthetic2d_train_follows_the_profile_with_every_subclass(synth):
    train = synth.load("train")
    counts = train.counts(synth.n_classes).tolist()
    assert synth.n_classes >= 6 and counts == exponential_profile(2000, synth.n_classes, 100)
    assert counts[0] == max(counts) and counts[0] / counts[-1] == pytest.approx(100)
    for c, mix in enumerate(synth.mixture):
        present = torch.bincount(train.subclass[train.y == c], minlength=mix.n_subclasses)
        assert len(present) == mix.n_subclasses and (present >= 1).all()
    assert max(m.n_subclasses for m in synth.mixture) > 1 and min(m.n_subclasses for m in synth.mixture) >= 1


def test_synthetic2d_every_subclass_present_even_in_a_harsh_tail():
    harsh = Synthetic2D(n_max=40, imbalance_ratio=10)  # class 7 gets 4 samples for 4 subclasses
    train = harsh.load("train")
    tail = train.subclass[train.y == 7]
    assert torch.equal(torch.sort(tail).values, torch.arange(4))


def test_synthetic2d_test_split_is_balanced_and_aligned(synth):
    test = synth.load("test")
    assert test.counts(synth.n_classes).tolist() == [200] * synth.n_classes
    assert test.x.shape == (len(test), 2) and test.x.dtype == torch.float32
    assert test.y.dtype == torch.int64 and test.subclass.shape == test.y.shape


def test_synthetic2d_mixture_parameters_describe_the_data(synth):
    fresh, test = synth.sample(2000, seed=1), synth.load("test")
    for c, mix in enumerate(synth.mixture):
        assert mix.weights.sum() == pytest.approx(1) and np.all(np.diff(mix.weights) <= 0)
        shares = torch.bincount(test.subclass[test.y == c]).numpy() / 200
        np.testing.assert_allclose(shares, mix.weights, atol=0.01)
        for k in range(mix.n_subclasses):
            x = fresh.x[(fresh.y == c) & (fresh.subclass == k)].double().numpy()
            stderr = mix.stds[k] / np.sqrt(len(x))
            assert np.all(np.abs(x.mean(0) - mix.means[k]) < 4 * stderr)
            np.testing.assert_allclose(x.std(0, ddof=1), mix.stds[k], rtol=0.12)


def test_synthetic2d_classes_barely_overlap_and_sit_away_from_the_origin(synth):
    test = synth.load("test")
    means = np.concatenate([m.means for m in synth.mixture])
    owner = np.concatenate([[c] * m.n_subclasses for c, m in enumerate(synth.mixture)])
    nearest = np.linalg.norm(test.x.numpy()[:, None] - means[None], axis=-1).argmin(1)
    assert (owner[nearest] == test.y.numpy()).mean() > 0.97
    radius = test.x.norm(dim=1)
    assert radius.max() < 5 and radius.median() > 2.5  # an N(0, I) source must travel


def test_synthetic2d_describe_reports_counts(synth):
    info = synth.describe()
    assert info["name"] == "synthetic2d" and info["train_counts"][-1] == 20
    assert info["test_counts"] == [200] * 8 and len(info["n_subclasses"]) == 8


# -- digits_lt ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return DigitsLT()


def test_digits_images_are_sklearn_pixels_over_16(digits):
    ref = load_digits()
    for split in ("train", "test"):
        s = digits.load(split)
        assert s.x.shape == (len(s), 1, 8, 8) and s.x.dtype == torch.float32
        assert 0 <= s.x.min() and s.x.max() <= 1
        np.testing.assert_array_equal(s.x[:, 0].numpy(), (ref.images[s.ids] / 16).astype(np.float32))
        np.testing.assert_array_equal(s.y.numpy(), ref.target[s.ids])
        assert s.subclass is None


def test_digits_test_split_is_balanced_and_disjoint_from_train(digits):
    train, test = digits.load("train"), digits.load("test")
    assert test.counts(10).tolist() == [40] * 10
    assert not set(train.ids) & set(test.ids)
    assert len(set(train.ids)) == len(train)


def test_digits_train_follows_the_profile(digits):
    counts = digits.load("train").counts(10).tolist()
    head_available = int((load_digits().target == 0).sum()) - 40
    assert counts == exponential_profile(head_available, 10, 10)
    assert counts[0] == max(counts) and counts[0] / counts[-1] == pytest.approx(10, rel=0.05)
    assert digits.class_names == [str(c) for c in range(10)]
    assert DigitsLT(imbalance_ratio=20).load("train").counts(10)[-1] == round(head_available / 20)


def test_digits_deterministic_by_seed_and_test_split_independent_of_imbalance(digits):
    assert DigitsLT(seed=0).load("train").ids == digits.load("train").ids
    assert DigitsLT(seed=1).load("test").ids != digits.load("test").ids
    assert DigitsLT(imbalance_ratio=50).load("test").ids == digits.load("test").ids


def test_digits_bad_settings_are_user_errors():
    with pytest.raises(BenchError):
        DigitsLT(n_test_per_class=500).load("train")
    with pytest.raises(BenchError):
        DigitsLT().load("val")
