"""The claims report's test-set-aware intervals and replication text (bench.paper.claim_bootstrap),
from fixture records whose stored predictions reproduce their metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from records_fixture import make_experiment
from sklearn.metrics import balanced_accuracy_score, f1_score

from bench.metrics.hierarchical_bootstrap import hierarchical_interval
from bench.metrics.significance import t_interval
from bench.paper import claims
from bench.paper.claim_bootstrap import (
    HEADER,
    NO_AUG,
    NOT_RECORDED,
    bootstrap_lines,
    bootstrap_rows,
    replication_lines,
)
from bench.paper.claim_rules import number
from bench.report.collect import load_experiment

SEEDS, N_CLASSES = (0, 1, 2, 3), 4
LABELS = np.repeat(np.arange(N_CLASSES), 10)
SKILL = {"fm": 0.6, "cbfm": 0.55, "optprior": 0.7, "no_aug": 0.5}


def predictions(run: str, seed: int) -> list[list[int]]:
    """Three classifiers' predictions: correct with probability SKILL[run], else the next class."""
    rng = np.random.default_rng([seed, len(run), sum(map(ord, run))])
    return [
        np.where(rng.random(len(LABELS)) < SKILL[run], LABELS, (LABELS + 1) % N_CLASSES).tolist()
        for _ in range(3)
    ]


def scores(pred: list[list[int]]) -> dict:
    return {
        "bacc": [balanced_accuracy_score(LABELS, p) for p in pred],
        "macro_f1": [
            f1_score(LABELS, p, labels=range(N_CLASSES), average="macro", zero_division=0) for p in pred
        ],
    }


def with_predictions(folder, tied: bool = False, drop=()):
    """Rewrite the fixture's records so their downstream metrics come from stored predictions."""
    for path in folder.glob("*/*/seed*/record.json"):
        rec = json.loads(path.read_text())
        method, seed = rec["method"], rec["seed"]
        aug, no_aug = predictions(method, seed), predictions("no_aug", seed)
        down = rec["details"]["downstream"]
        for suffix, pred in (("", aug), ("/no_aug", no_aug)):
            for key, values in scores(pred).items():
                down[key + suffix], rec["metrics"][key + suffix] = values, float(np.mean(values))
        if method not in drop:
            down["predictions"] = {"labels": LABELS.tolist(), "aug": aug, "no_aug": no_aug}
        rec["dataset_info"] = {"name": rec["dataset"], "n_classes": N_CLASSES} | (
            {"split_seed": seed} if tied else {}
        )
        rec["n"]["test"] = len(LABELS)
        path.write_text(json.dumps(rec))
    return load_experiment(folder, warn=False)


@pytest.fixture
def exp(tmp_path):
    return with_predictions(
        make_experiment(tmp_path, datasets=("digits_lt",), methods=("fm", "cbfm", "optprior"), seeds=SEEDS)
    )


def test_no_aug_is_the_claims_reports_reference_name():
    assert NO_AUG == claims.NO_AUG


@pytest.mark.parametrize("metric", ["bacc", "macro_f1"])
def test_rows_hold_the_seed_level_t_interval_and_the_hierarchical_one(exp, metric):
    rows = bootstrap_rows(exp, "digits_lt", (NO_AUG, "fm"), n_boot=500, seed=3)
    assert [len(r) for r in rows] == [len(HEADER)] * 4
    for ref, run in ((NO_AUG, "no_aug"), ("fm", "fm")):
        row = next(r for r in rows if r[0] == dict(bacc="bAcc", macro_f1="macro-F1")[metric] and r[1] == ref)
        ours = [np.mean(scores(predictions("optprior", s))[metric]) for s in SEEDS]
        theirs = [np.mean(scores(predictions(run, s))[metric]) for s in SEEDS]
        d = np.array(ours) - np.array(theirs)
        low, high = t_interval(d)
        want = hierarchical_interval(
            LABELS,
            [np.array(predictions("optprior", s)) for s in SEEDS],
            [np.array(predictions(run, s)) for s in SEEDS],
            metric,
            N_CLASSES,
            n_boot=500,
            seed=3,
        )
        assert row[2:] == [
            "4",
            "40",
            number(d.mean()),
            f"[{number(low)}, {number(high)}]",
            f"[{number(want.low)}, {number(want.high)}]",
        ]


def test_records_without_predictions_say_not_recorded(tmp_path):
    exp = with_predictions(
        make_experiment(tmp_path, datasets=("digits_lt",), methods=("fm", "optprior"), seeds=SEEDS),
        drop=("fm",),
    )
    rows = {r[1]: r for r in bootstrap_rows(exp, "digits_lt", (NO_AUG, "fm"), n_boot=50)}
    assert rows["fm"][-1] == NOT_RECORDED and rows[NO_AUG][-1].startswith("[")
    bare = load_experiment(
        make_experiment(tmp_path / "bare", datasets=("digits_lt",), methods=("fm", "optprior")), warn=False
    )
    assert NOT_RECORDED in bootstrap_lines(bare, "digits_lt", (NO_AUG, "fm"))[0]


def test_predictions_that_disagree_with_the_metric_are_flagged(exp):
    path = exp.folder / "digits_lt" / "fm" / "seed1" / "record.json"
    rec = json.loads(path.read_text())
    rec["metrics"]["bacc"] += 0.01
    path.write_text(json.dumps(rec))
    rows = bootstrap_rows(load_experiment(exp.folder, warn=False), "digits_lt", ("fm",), n_boot=50)
    assert rows[0][-1] == "predictions disagree with the recorded metric"


def test_lines_name_the_design_and_the_table(exp):
    lines = bootstrap_lines(exp, "digits_lt", (NO_AUG, "fm", "cbfm"), n_boot=50)
    assert "one test set shared by every seed" in lines[0] and lines[2].startswith("| metric |")
    assert len([ln for ln in lines if ln.startswith("| bAcc") or ln.startswith("| macro-F1")]) == 6


def test_replication_lines_state_n_the_fixed_split_and_what_a_seed_varies(exp):
    text = " ".join(replication_lines(exp))
    assert "digits_lt (n = 4 seeds, 40 test images)" in text and "the data split was fixed" in text
    assert "training (noise, timesteps, batch order)" in text and "FID feature network" in text


def test_a_tied_split_is_said_and_bootstrapped_per_seed(tmp_path):
    exp = with_predictions(
        make_experiment(tmp_path, datasets=("digits_lt",), methods=("fm", "optprior"), seeds=SEEDS), tied=True
    )
    text = " ".join(replication_lines(exp))
    assert "drawn from the generative seed" in text and "was fixed" not in text
    assert "each seed's own test set" in bootstrap_lines(exp, "digits_lt", (NO_AUG,), n_boot=50)[0]
