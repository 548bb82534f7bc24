"""The medmnist plugin on small fake files in the official npz format: counts, pixels, long tail, errors."""

import logging

import numpy as np
import pytest
import torch

from bench.data.longtail import exponential_profile
from bench.datasets.medmnist import LABEL_NAMES, MedMNIST, fitted_profile
from bench.errors import BenchError
from bench.registry import datasets

# A DermaMNIST-like natural long tail (largest class 5, as in the real set).
DERMA_TRAIN = [12, 20, 40, 6, 45, 160, 8]
DERMA_EVAL = [2, 3, 5, 1, 5, 20, 1]
# Pixels of train image 0 whose luma differs from their channel mean.
COLOURS = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (0, 2): (0, 0, 255), (5, 7): (10, 200, 30)}


def fake_split(counts, rng, shape):
    """Shuffled (N, 1) uint8 labels with `counts` per class and random uint8 images of `shape`."""
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.uint8)[:, None]
    return rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8), labels


def official(train, val, test, rng, shape) -> dict:
    """The six arrays of a MedMNIST npz."""
    arrays = {}
    for split, counts in (("train", train), ("val", val), ("test", test)):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = fake_split(counts, rng, shape)
    return arrays


def derma_arrays(seed=0) -> dict:
    arrays = official(DERMA_TRAIN, DERMA_EVAL, DERMA_EVAL, np.random.default_rng(seed), (28, 28, 3))
    for (r, c), rgb in COLOURS.items():
        arrays["train_images"][0, r, c] = rgb
    arrays["train_images"][1] = 128  # a constant image stays constant when resized
    return arrays


@pytest.fixture
def root(tmp_path):
    """dermamnist.npz (RGB), pneumoniamnist.npz and pneumoniamnist_64.npz (grayscale)."""
    np.savez_compressed(tmp_path / "dermamnist.npz", **derma_arrays())
    rng = np.random.default_rng(1)
    np.savez_compressed(tmp_path / "pneumoniamnist.npz", **official([30, 80], [5, 9], [6, 10], rng, (28, 28)))
    np.savez_compressed(tmp_path / "pneumoniamnist_64.npz", **official([7, 9], [2, 3], [3, 2], rng, (64, 64)))
    return tmp_path


def stored(root, name="dermamnist.npz"):
    with np.load(root / name) as npz:
        return {k: npz[k] for k in npz.files}


def write(root, name, arrays):
    np.savez(root / name, **arrays)
    return root


def one_line_error(match, make, split="train"):
    with pytest.raises(BenchError, match=match) as info:
        make().load(split)
    assert "\n" not in str(info.value)
    return str(info.value)


# -- plugin, classes, counts ------------------------------------------------------------------
def test_medmnist_is_the_registered_plugin():
    assert datasets.get("medmnist") is MedMNIST


def test_official_names_and_counts_equal_the_files_labels(root):
    ds, arrays = MedMNIST(root=root), stored(root)
    assert ds.class_names == LABEL_NAMES["dermamnist"] and ds.n_classes == 7
    assert ds.class_names[5] == "melanocytic nevi" and ds.eval_split == "test"
    for split in ("train", "val", "test"):
        part = ds.load(split)
        y = arrays[f"{split}_labels"][:, 0]
        assert part.counts(7).tolist() == np.bincount(y, minlength=7).tolist()
        assert torch.equal(part.y, torch.from_numpy(y.astype(np.int64)))
        assert part.ids == [f"{split}_{i}" for i in range(len(y))] and part.meta is None
    assert ds.load("train").counts(7).tolist() == DERMA_TRAIN
    assert ds.load("train") is ds.load("train")  # cached per split
    info = ds.describe()
    assert info["train_counts"] == DERMA_TRAIN and info["flag"] == "dermamnist"
    assert info["file"] == "dermamnist.npz" and "natural_train_counts" not in info


def test_unknown_flag_gets_generic_names_from_its_labels(root, caplog):
    arrays = official([4, 6, 3], [1, 1, 1], [2, 0, 5], np.random.default_rng(2), (28, 28))
    write(root, "mysetmnist.npz", arrays)
    with caplog.at_level(logging.WARNING, logger="bench.datasets.medmnist"):
        ds = MedMNIST(root=root, flag="mysetmnist")
        assert ds.class_names == ["class_0", "class_1", "class_2"]
    assert "mysetmnist" in caplog.text
    assert ds.load("test").counts(3).tolist() == [2, 0, 5]


# -- pixels ----------------------------------------------------------------------------------
def test_pixels_are_the_stored_bytes_over_255_at_size_28(root):
    x = MedMNIST(root=root).load("train").x
    expected = stored(root)["train_images"].transpose(0, 3, 1, 2).astype(np.float32) / 255
    assert x.dtype == torch.float32 and x.shape == (sum(DERMA_TRAIN), 3, 28, 28)
    np.testing.assert_array_equal(x.numpy(), expected)
    gray = MedMNIST(root=root, flag="pneumoniamnist").load("val").x
    expected = stored(root, "pneumoniamnist.npz")["val_images"][:, None].astype(np.float32) / 255
    np.testing.assert_array_equal(gray.numpy(), expected)


def test_grayscale_conversion_uses_the_luma_formula(root):
    x = MedMNIST(root=root, grayscale=True).load("train").x
    assert x.shape[1] == 1
    for (r, c), (red, green, blue) in COLOURS.items():
        luma = (red * 299 + green * 587 + blue * 114) / 1000 / 255  # ITU-R 601-2, as PIL's "L"
        assert abs(float(x[0, 0, r, c]) - luma) <= 1 / 255 + 1e-6
    assert abs(float(x[0, 0, 0, 0]) - 85 / 255) > 5 / 255  # luma, not the channel mean
    rgb = MedMNIST(root=root, flag="pneumoniamnist", grayscale=False).load("test").x
    assert rgb.shape[1] == 3 and torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 0], rgb[:, 2])


def test_resize_gives_the_model_size(root):
    x = MedMNIST(root=root, size=32).load("train").x
    assert x.shape == (sum(DERMA_TRAIN), 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    torch.testing.assert_close(x[1], torch.full((3, 32, 32), 128 / 255))
    big = MedMNIST(root=root, flag="pneumoniamnist", file_size=64)
    assert big.load("train").x.shape == (16, 1, 28, 28)
    assert big.describe()["file"] == "pneumoniamnist_64.npz"


# -- long tail -------------------------------------------------------------------------------
def brute_force_targets(counts, ratio):
    """Largest head count whose profile, ranked by natural count, fits every class (by search)."""
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    for n_max in range(max(counts), 0, -1):
        profile = exponential_profile(n_max, len(counts), ratio)
        if all(profile[k] <= counts[c] for k, c in enumerate(order)):
            targets = [0] * len(counts)
            for k, c in enumerate(order):
                targets[c] = profile[k]
            return targets
    raise AssertionError("no profile fits")


def test_long_tail_subsample_follows_the_fitted_profile(root):
    ds = MedMNIST(root=root, imbalance_ratio=10, seed=0)
    train, arrays = ds.load("train"), stored(root)
    counts = train.counts(7).tolist()
    assert counts == brute_force_targets(DERMA_TRAIN, 10) == fitted_profile(DERMA_TRAIN, 10)
    assert counts[5] == 57 and counts[5] < DERMA_TRAIN[5]  # the head is cut to fit the tail
    assert sorted(counts, reverse=True) == exponential_profile(57, 7, 10)
    rows = [int(i.split("_")[1]) for i in train.ids]
    assert rows == sorted(set(rows))
    assert torch.equal(train.y, torch.from_numpy(arrays["train_labels"][rows, 0].astype(np.int64)))
    np.testing.assert_array_equal(
        train.x.numpy()[:, 0], arrays["train_images"][rows, ..., 0] / np.float32(255)
    )
    assert ds.load("test").counts(7).tolist() == DERMA_EVAL  # held-out splits untouched
    assert ds.describe()["natural_train_counts"] == DERMA_TRAIN


def test_fitted_profile_is_the_largest_that_fits_on_random_counts():
    rng = np.random.default_rng(0)
    for _ in range(40):
        counts = rng.integers(5, 300, rng.integers(2, 9)).tolist()
        ratio = float(rng.choice([1, 2.5, 10, 50]))
        assert fitted_profile(counts, ratio) == brute_force_targets(counts, ratio)


def test_long_tail_subsample_is_deterministic_by_seed(root):
    ids = lambda seed: MedMNIST(root=root, imbalance_ratio=10, seed=seed).load("train").ids  # noqa: E731
    assert ids(3) == ids(3) and ids(3) != ids(4)


def test_impossible_or_invalid_imbalance_is_a_clear_error(root):
    with pytest.raises(BenchError, match="rarest class would get no image"):
        fitted_profile([100, 1], 1000)
    with pytest.raises(BenchError, match="rarest class would get no image"):
        fitted_profile([50, 0, 10], 2)
    with pytest.raises(BenchError, match="imbalance_ratio"):
        MedMNIST(root=root, imbalance_ratio=0.5)
    one_line_error("cannot be met", lambda: MedMNIST(root=root, imbalance_ratio=1e6))


# -- bad input -------------------------------------------------------------------------------
def test_missing_root_or_file_names_the_expected_file(root, tmp_path):
    one_line_error("medmnist.root is not set", lambda: MedMNIST())
    one_line_error("not a directory", lambda: MedMNIST(root=tmp_path / "nowhere"))
    msg = one_line_error("no bloodmnist.npz", lambda: MedMNIST(root=root, flag="bloodmnist"))
    assert "flag='bloodmnist'" in msg
    msg = one_line_error("no dermamnist_224.npz", lambda: MedMNIST(root=root, file_size=224))
    assert "['dermamnist.npz']" in msg and "file_size" in msg


def test_bad_settings_are_refused_at_construction(root):
    for kwargs, match in (
        ({"file_size": 32}, "file_size"),
        ({"flag": "../derma"}, "flag"),
        ({"flag": "chestmnist"}, "multi-label"),
        ({"size": 2}, "size"),
        ({"normalise": "zscore"}, "normalise"),
        ({"grayscale": "yes"}, "grayscale"),
    ):
        with pytest.raises(BenchError, match=match):
            MedMNIST(root=root, **kwargs)
    one_line_error("splits", lambda: MedMNIST(root=root), split="valid")


def test_npz_lacking_keys_lists_them(root):
    arrays = derma_arrays()
    del arrays["val_images"], arrays["val_labels"]
    write(root, "dermamnist.npz", arrays)
    one_line_error(r"lacks key\(s\) \['val_images', 'val_labels'\]", lambda: MedMNIST(root=root))


def test_corrupt_files_are_one_line_errors(root):
    (root / "dermamnist.npz").write_bytes(b"not a zip archive at all")
    one_line_error("cannot read .* as a MedMNIST npz", lambda: MedMNIST(root=root))
    intact = (root / "pneumoniamnist.npz").read_bytes()
    (root / "pneumoniamnist.npz").write_bytes(intact[: len(intact) // 2])
    one_line_error("cannot read", lambda: MedMNIST(root=root, flag="pneumoniamnist"))
    with open(root / "bloodmnist.npz", "wb") as f:
        np.save(f, np.zeros((3, 28, 28), np.uint8))
    one_line_error("single array", lambda: MedMNIST(root=root, flag="bloodmnist"))


@pytest.mark.parametrize(
    "label, match", [(7, "outside 0..6"), (-1, "outside 0..6"), (np.nan, "NaN"), (2.5, "not whole numbers")]
)
def test_bad_labels_are_refused(root, label, match):
    arrays = derma_arrays()
    labels = arrays["val_labels"].astype(np.float64 if isinstance(label, float) else np.int64)
    labels[3, 0] = label
    arrays["val_labels"] = labels
    write(root, "dermamnist.npz", arrays)
    one_line_error(match, lambda: MedMNIST(root=root), split="val")


def test_multi_label_files_are_refused(root):
    arrays = derma_arrays()
    arrays["train_labels"] = np.random.default_rng(0).integers(0, 2, (len(arrays["train_labels"]), 14))
    write(root, "chestlikemnist.npz", arrays)
    one_line_error("multi-label", lambda: MedMNIST(root=root, flag="chestlikemnist"))


@pytest.mark.parametrize(
    "shape, match",
    [((28, 28, 4), "expected"), ((784,), "expected"), ((28, 28, 28), "3-D"), ((32, 32, 3), "file_size=28")],
)
def test_images_of_the_wrong_shape_are_refused(root, shape, match):
    arrays = derma_arrays()
    arrays["test_images"] = np.zeros((len(arrays["test_labels"]), *shape), np.uint8)
    write(root, "dermamnist.npz", arrays)
    one_line_error(match, lambda: MedMNIST(root=root), split="test")


def test_images_must_be_uint8_and_match_the_labels(root):
    arrays = derma_arrays()
    arrays["test_images"] = arrays["test_images"].astype(np.float32)
    arrays["val_images"] = arrays["val_images"][:-1]
    write(root, "dermamnist.npz", arrays)
    one_line_error("uint8", lambda: MedMNIST(root=root), split="test")
    one_line_error("images but val_labels has", lambda: MedMNIST(root=root), split="val")
