"""The plan of the downstream classifier runs (bench.classify.runs): seeds, names, tasks and how the
tasks' results are put back in seed order."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from bench import registry
from bench.classify.runs import (
    AUG,
    NO_AUG,
    by_run,
    classifier_seed,
    classifier_seeds,
    combined,
    remedy_names,
    set_up_remedy,
    tasks,
)
from bench.errors import BenchError


def test_classifier_seeds_are_pinned_and_distinct():
    # the stored baseline units' keys hash these seeds: a change would retrain every shared unit
    assert classifier_seeds(0, 2) == [2968811710, 3964924996]
    assert classifier_seed(1, 0) == 1835504127
    seeds = {classifier_seed(cell, i) for cell in range(5) for i in range(5)}
    assert len(seeds) == 25 and all(0 <= s < 2**32 for s in seeds)


def test_run_names():
    assert (NO_AUG, AUG, combined("crt")) == ("no_aug", "aug", "aug+crt")


def test_tasks_are_every_run_for_every_seed_run_by_run():
    assert tasks(("aug", "reweight"), 2) == [("aug", 0), ("aug", 1), ("reweight", 0), ("reweight", 1)]
    assert tasks((), 3) == []


def test_by_run_puts_results_in_seed_order_whatever_order_the_tasks_came_back_in():
    todo = tasks(("aug", "focal"), 3)
    random.Random(0).shuffle(todo)
    # the aug task also returns the head retrained on its classifier (aug+crt), as cRT does
    results = [{name: f"{name}{i}", **({"aug+crt": f"crt{i}"} if name == "aug" else {})} for name, i in todo]
    out = by_run(["aug", "aug+crt", "focal"], todo, results, 3)
    assert out == {
        "aug": ["aug0", "aug1", "aug2"],
        "aug+crt": ["crt0", "crt1", "crt2"],
        "focal": ["focal0", "focal1", "focal2"],
    }


def test_by_run_leaves_a_seed_no_task_returned_empty():
    assert by_run(["aug"], [("aug", 1)], [{"aug": "x"}], 2) == {"aug": [None, "x"]}


def test_remedy_names_keep_order_and_drop_duplicates():
    assert remedy_names("downstream", "remedies", ["crt", "reweight", "crt"]) == ("crt", "reweight")
    assert remedy_names("downstream", "remedies", []) == ()


@pytest.mark.parametrize("bad", ["crt", ["crt", 3]])
def test_malformed_remedy_lists_are_one_line_errors(bad):
    with pytest.raises(BenchError, match=r"^downstream.with_augmentation must be a list of remedy names"):
        remedy_names("downstream", "with_augmentation", bad)


def test_an_unknown_remedy_gets_a_did_you_mean():
    with pytest.raises(BenchError, match="unknown remedy 'focall'; did you mean 'focal'"):
        remedy_names("downstream", "remedies", ["focall"])


def test_a_remedy_is_set_up_with_the_class_counts_of_its_labels():
    remedy = set_up_remedy("reweight", torch.tensor([0, 0, 0, 2, 0]), 4)
    assert isinstance(remedy, registry.remedies.get("reweight"))
    assert np.array_equal(remedy.counts, [4, 0, 1, 0])  # every class, absent ones counted 0
