"""data_split.tie_to_seed: the embedded datasets' splits drawn from the generative seed (on), or
one split for every seed as before (off); datasets with an official split refuse it."""

from __future__ import annotations

import numpy as np
import pytest

from bench.errors import BenchError
from bench.pipeline.assemble import CellSpec, RunRequest, build_cell
from bench.store.fingerprint import split_fingerprint

TIE = ["data_split.tie_to_seed = True"]


def cell(dataset: str, seed: int, bindings=()):
    return build_cell(CellSpec("quick", dataset, "fm", seed), RunRequest(bindings=list(bindings)))


def splits(built) -> dict:
    ds = built.dataset
    names = {ds.train_split, ds.eval_split} | ({ds.val_split} if ds.val_split else set())
    return {name: split_fingerprint(ds.load(name)) for name in names}


def test_off_every_seed_shares_one_split_and_the_description_is_unchanged():
    a, b = cell("digits_lt", 0), cell("digits_lt", 7)
    assert splits(a) == splits(b)
    assert "split_seed" not in a.dataset.describe() and a.dataset.tied_split_seed is None
    assert a.stage_hashes["encode"] == b.stage_hashes["encode"]  # the seed reaches no data stage


@pytest.mark.parametrize("dataset", ["digits_lt", "synthetic2d"])
def test_on_the_split_changes_with_the_seed_and_is_reproducible(dataset):
    a, b, again = cell(dataset, 1, TIE), cell(dataset, 2, TIE), cell(dataset, 1, TIE)
    fa, fb = splits(a), splits(b)
    assert all(fa[name] != fb[name] for name in fa)  # train and test (and val) all redrawn
    assert fa == splits(again)
    assert a.dataset.describe()["split_seed"] == 1 and a.stage_hashes["encode"] != b.stage_hashes["encode"]
    counts = lambda c, s: c.dataset.load(s).counts(c.dataset.n_classes).tolist()  # noqa: E731
    assert counts(a, "train") == counts(b, "train") and counts(a, "test") == counts(b, "test")  # same profile


def test_digits_lt_tied_to_seed_k_draws_the_split_of_data_seed_k():
    """The generative seed takes the data seed's place: an independent check on the row indices."""
    tied = cell("digits_lt", 3, TIE).dataset
    plain = cell("digits_lt", 0, ["digits_lt.seed = 3"]).dataset
    for split in ("train", "test"):
        assert tied.load(split).ids == plain.load(split).ids
    assert set(tied.load("train").ids).isdisjoint(tied.load("test").ids)


def test_synthetic2d_keeps_its_mixture_when_tied():
    a, b = cell("synthetic2d", 1, TIE).dataset, cell("synthetic2d", 2, TIE).dataset
    for ma, mb in zip(a.mixture, b.mixture):
        np.testing.assert_array_equal(ma.means, mb.means)


def test_phantom_lt_split_changes_with_the_seed():
    small = [
        "phantom_lt.n_max = 80",
        "phantom_lt.imbalance_ratio = 10",
        "phantom_lt.n_test_per_class = 4",
        "phantom_lt.n_val_per_class = 4",
    ]
    a, b = cell("phantom_lt", 1, TIE + small).dataset, cell("phantom_lt", 2, TIE + small).dataset
    assert split_fingerprint(a.load("balanced-test")) != split_fingerprint(b.load("balanced-test"))
    off = [cell("phantom_lt", s, small).dataset.load("balanced-test") for s in (1, 2)]
    assert split_fingerprint(off[0]) == split_fingerprint(off[1])


@pytest.mark.parametrize("dataset", ["medmnist", "nih_lt", "mimic_lt", "ct_rate"])
def test_a_dataset_with_an_official_split_refuses_it_in_one_line(dataset):
    with pytest.raises(BenchError) as err:
        cell(dataset, 0, TIE)
    message = str(err.value)
    assert "\n" not in message and dataset in message and "data_split.tie_to_seed" in message


def test_a_non_boolean_setting_is_one_line():
    with pytest.raises(BenchError, match="data_split.tie_to_seed takes True or False"):
        cell("digits_lt", 0, ["data_split.tie_to_seed = 'yes'"])
