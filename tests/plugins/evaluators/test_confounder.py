"""Confounder probe: finds the confounder planted in phantom_lt, sits at chance without it."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from bench.context import CellContext
from bench.dataset import Dataset, Split
from bench.datasets.phantom_lt import PhantomLT
from bench.evaluators.confounder import (
    ConfounderProbe,
    confounder_probe,
    design,
    design_matrix,
    fold_designs,
    grouped_folds,
    metadata_columns,
    out_of_fold_bacc,
    probe_class,
    probe_frame,
    usable_folds,
)
from bench.registry import evaluators


def _probe_phantom(confounding: float) -> list[dict]:
    """The probe on every phantom_lt class with >= 2 ground-truth subtypes (train split)."""
    train = PhantomLT(confounding=confounding).load("train")
    y, sub, groups = train.y.numpy(), train.subclass.numpy(), train.meta["subject"].to_numpy()
    return [
        confounder_probe(train.meta[y == c], sub[y == c], groups[y == c], seed=0, n_permutations=5)
        for c in np.unique(y)
        if len(np.unique(sub[y == c])) >= 2
    ]


@pytest.mark.slow
def test_probe_finds_the_planted_confounder():
    rows = _probe_phantom(0.6)
    assert len(rows) == 9 and all("skipped" not in r for r in rows)
    assert set(rows[0]["columns"]) == {"sex", "age", "view", "scanner"}
    found = [r["bacc"] - r["perm_bacc"] > 0.15 and not r["near_chance"] for r in rows]
    assert sum(found) >= 7
    assert np.mean([r["gap"] for r in rows]) > 0.2
    assert all(abs(r["perm_bacc"] - r["chance"]) < 0.1 for r in rows)


@pytest.mark.slow
def test_probe_sits_at_chance_without_confounding():
    rows = _probe_phantom(0.0)
    assert abs(np.mean([r["gap"] for r in rows])) < 0.05
    assert sum(r["near_chance"] for r in rows) >= 7
    assert all(abs(r["bacc"] - r["chance"]) < 0.15 for r in rows)


def test_grouped_folds_never_split_a_patient():
    train = PhantomLT().load("train")
    rows = train.y.numpy() == 1
    groups, sub = train.meta["subject"].to_numpy()[rows], train.subclass.numpy()[rows]
    assert len(np.unique(groups)) < len(groups)  # some patients have several images of this class
    folds = grouped_folds(sub, groups, 5, seed=0)
    tested = np.concatenate([test for _, test in folds])
    assert len(folds) == 5 and np.array_equal(np.sort(tested), np.arange(len(groups)))
    for train_rows, test_rows in folds:
        assert not set(groups[train_rows]) & set(groups[test_rows])
        assert len(np.unique(sub[test_rows])) == 4  # stratified: every subtype in every test fold


def _meta(n: int, rng) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject": [f"P{i // 2}" for i in range(n)],
            "id": [f"img{i}" for i in range(n)],
            "study_id": np.arange(n),
            "site": ["one"] * n,
            "age": rng.integers(20, 90, n),
            "view": rng.choice(["AP", "PA"], n),
        }
    )


def test_metadata_columns_and_design_matrix():
    rng = np.random.default_rng(0)
    meta = _meta(60, rng).assign(note=[f"free text {i}" for i in range(60)], sex=["M", "F", None, "F"] * 15)
    assert metadata_columns(meta) == ["age", "view", "sex"]  # ids, constants and free text dropped
    x = design_matrix(meta, ["age", "view", "sex"])
    assert x.shape == (60, 1 + 2 + 3)  # standardised age, AP/PA, F/M/missing
    np.testing.assert_allclose([x[:, 0].mean(), x[:, 0].std()], [0.0, 1.0], atol=1e-12)
    np.testing.assert_array_equal(x[:, 1:3].sum(1), 1.0)
    text_age = design_matrix(meta.assign(age=meta["age"].astype(str)), ["age"])
    np.testing.assert_allclose(text_age[:, 0], x[:, 0])  # numbers stored as text are still numbers


def test_folds_are_lowered_or_the_class_skipped():
    rng = np.random.default_rng(1)
    meta = _meta(60, rng)
    groups = meta["subject"].to_numpy()
    sub = np.zeros(60, int)
    sub[:6] = 1  # subclass 1: 3 patients -> 3 folds
    assert usable_folds(sub, groups, 5) == 3
    assert confounder_probe(meta, sub, groups, seed=0, n_permutations=2)["folds"] == 3
    sub[:6] = 0
    sub[:2] = 1  # a single patient
    assert "single patient" in confounder_probe(meta, sub, groups, seed=0)["skipped"]
    assert confounder_probe(meta, np.zeros(60, int), groups, seed=0)["skipped"] == "one subclass"
    assert "no usable" in confounder_probe(meta[["subject", "site"]], sub, groups, seed=0)["skipped"]


class _Tiny(Dataset):
    class_names = ["a", "b", "c"]


def _cell(tmp_path: Path, tensors, meta=True):
    """Class a: subclass = view (a planted confounder); b: one subclass; c: subclass independent of meta."""
    rng = np.random.default_rng(2)
    n = 120
    y = np.repeat([0, 1, 2], n)
    table = _meta(3 * n, rng)
    sub = np.concatenate([(table["view"][:n] == "AP").astype(int), np.zeros(n, int), rng.integers(0, 2, n)])
    train = Split(torch.zeros(3 * n, 2), torch.tensor(y), meta=table if meta else None)
    prior = None if tensors is None else SimpleNamespace(tensors=tensors(sub))
    return CellContext(_Tiny(), train, train, train, tmp_path, seed=0, prior=prior)


def test_evaluator_aggregates_like_table_3(tmp_path):
    evaluator = ConfounderProbe(n_permutations=5)
    metrics = evaluator.evaluate(_cell(tmp_path, lambda s: {"assignment": torch.tensor(s)}))
    rows = json.loads((tmp_path / "confounder.json").read_text())["classes"]
    assert [r["class"] for r in rows] == ["a", "c"]
    assert rows[0]["bacc"] == 1.0 and not rows[0]["near_chance"]  # view gives subclass away
    assert rows[1]["near_chance"]
    for key in ("bacc", "perm_bacc", "gap"):
        assert metrics[f"probe_{key}"] == pytest.approx(np.mean([r[key] for r in rows]))
        assert metrics[f"probe_{key}_weighted"] == pytest.approx(np.mean([r[key] for r in rows]))  # equal n
    assert metrics["probe_near_chance"] == 0.5 and metrics["probe_classes"] == 2
    assert set(metrics) == set(evaluator.higher_is_better)
    assert evaluator.higher_is_better["probe_near_chance"] and not evaluator.higher_is_better["probe_gap"]


def test_evaluator_weights_by_class_size(tmp_path):
    cell = _cell(tmp_path, lambda s: {"assignment": torch.tensor(s)})
    cell.train = cell.train.subset(torch.arange(360)[torch.arange(360) >= 60])  # class a keeps 60 rows
    cell.prior.tensors["assignment"] = cell.prior.tensors["assignment"][60:]
    metrics = ConfounderProbe(n_permutations=3).evaluate(cell)
    rows = json.loads((tmp_path / "confounder.json").read_text())["classes"]
    assert [r["n"] for r in rows] == [60, 120]
    assert metrics["probe_gap_weighted"] == pytest.approx((60 * rows[0]["gap"] + 120 * rows[1]["gap"]) / 180)


def test_evaluator_without_metadata_or_subclasses(tmp_path):
    assert (
        ConfounderProbe().evaluate(_cell(tmp_path, lambda s: {"assignment": torch.tensor(s)}, meta=False))
        == {}
    )
    assert ConfounderProbe().evaluate(_cell(tmp_path, None)) == {}
    assert ConfounderProbe().evaluate(_cell(tmp_path, lambda s: {"weights": torch.ones(3, 2)})) == {}
    assert not (tmp_path / "confounder.json").exists()


def test_confounder_is_the_registered_plugin():
    assert evaluators.get("confounder") is ConfounderProbe


def test_out_of_fold_bacc_equals_sklearn_cross_val_predict_of_the_pipeline():
    """The per-fold designs shared by the real labels and every shuffle give what a fresh
    design + probe pipeline per fit gives (scikit-learn's cross_val_predict)."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(3)
    n = 240
    meta = pd.DataFrame(
        {
            "age": rng.normal(50, 10, n),
            "sex": rng.choice(["F", "M", ""], n),
            "view": rng.choice(["AP", "PA", "LL"], n),
            "scanner": rng.choice(["a", "b", "c", "d"], n),
        }
    )
    meta.loc[rng.choice(n, 20, replace=False), "age"] = np.nan
    sub = (meta["view"].eq("AP").to_numpy() ^ (rng.random(n) < 0.3)).astype(int) + 2 * (rng.random(n) < 0.3)
    groups = rng.integers(0, 60, n)
    frame, numeric, categorical = probe_frame(meta, list(meta.columns))
    folds = grouped_folds(sub, groups, 4, seed=0)
    designs = fold_designs(frame, numeric, categorical, folds)
    for y in (sub, rng.permutation(sub)):
        pipeline = make_pipeline(
            design(numeric, categorical),
            probe_class()(solver="newton-cholesky", max_iter=1000, class_weight="balanced"),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = balanced_accuracy_score(y, cross_val_predict(pipeline, frame, y, cv=folds))
        assert out_of_fold_bacc(designs, y) == reference
