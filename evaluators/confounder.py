"""Confounder probe (paper Tab. 3): can acquisition metadata alone predict the induced subclass?

Per class, a metadata-only multinomial logistic regression predicts the subclass of each
training image, scored by the balanced accuracy (bAcc) of out-of-fold predictions from
grouped stratified K-fold cross-validation (patients never straddle folds, so repeat images
of one patient cannot leak). The same pipeline on shuffled subclass labels gives the
permutation baseline PermbAcc: what the probe scores when the subclasses carry no metadata
signal (about 1/K, slightly less from cross-validation). A high bAcc - PermbAcc means the
subclasses follow acquisition (view, scanner, ...) rather than pathology; a class is
NearChance when the gap stays below `near_chance_tol` (default 0.05 bAcc).
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench.config.checks import is_int, is_real
from bench.errors import BenchError
from bench.evaluator import Evaluator, Metric, directions
from bench.priors.subclass import split_classes
from bench.registry import register_evaluator

log = logging.getLogger(__name__)

DETAILS = "confounder.json"
# identifier and bookkeeping columns of bench's datasets: never acquisition metadata
ID_COLUMNS = {
    "id",
    "subject",
    "subject_id",
    "patient",
    "patient_id",
    "study",
    "study_id",
    "dicom_id",
    "path",
    "label",
    "split",
    "slice",
    "volumename",
}
MAX_LEVELS = 50  # a text column with more distinct values is an identifier, not a category

if TYPE_CHECKING:  # scikit-learn itself loads when the probe runs
    from sklearn.compose import ColumnTransformer


def metadata_columns(meta: pd.DataFrame) -> list[str]:
    """Default probe inputs: every column except identifiers (ID_COLUMNS, names ending in "_id",
    text columns with more than MAX_LEVELS values) and columns that are constant or empty."""
    keep = []
    for name in meta.columns:
        col = meta[name]
        lowered = str(name).lower()
        if lowered in ID_COLUMNS or lowered.endswith("_id") or col.nunique(dropna=True) < 2:
            continue
        if _numeric(col) is None and col.nunique(dropna=True) > MAX_LEVELS:
            continue
        keep.append(name)
    return keep


def _numeric(col: pd.Series) -> pd.Series | None:
    """The column as floats when every non-blank value is a number, else None."""
    if pd.api.types.is_bool_dtype(col):
        return None
    blank = col.isna() | (col.astype(str).str.strip() == "")
    values = pd.to_numeric(col.where(~blank), errors="coerce")
    return values.astype(np.float64) if values.notna().sum() == (~blank).sum() else None


def probe_frame(meta: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The probe's inputs: numeric columns as floats (numbers stored as text included), the others
    as strings, blanks missing; and the names of each kind."""
    data, numeric, categorical = {}, [], []
    for name in columns:
        values = _numeric(meta[name])
        if values is None:
            data[name] = [str(v) if pd.notna(v) else np.nan for v in meta[name]]
            categorical.append(name)
        else:
            data[name] = values.to_numpy()
            numeric.append(name)
    return pd.DataFrame(data, index=range(len(meta)), columns=list(columns)), numeric, categorical


def design(numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """scikit-learn's design matrix: numeric columns with blanks at the mean plus a missing flag
    (where a column has blanks) and standardised, the others one-hot with blanks as their own
    level. Inside the probe's pipeline it is fitted on each training fold only."""
    # scikit-learn loads when the probe runs, not with the plugin (a fast CLI)
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return ColumnTransformer(
        [
            (
                "numeric",
                make_pipeline(SimpleImputer(strategy="mean", add_indicator=True), StandardScaler()),
                numeric,
            ),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="<missing>"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                categorical,
            ),
        ]
    )


def design_matrix(meta: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The design of `columns` fitted on all of `meta` (for inspection; the probe fits it per fold)."""
    frame, numeric, categorical = probe_frame(meta, columns)
    return design(numeric, categorical).fit_transform(frame)


def grouped_folds(
    y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs of StratifiedGroupKFold(n_splits, shuffle, seeded): stratified
    by subclass, and every patient's images on one side."""
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(y), 1)), y, groups))


@functools.cache
def probe_class() -> type:
    """`Probe`: the class-balanced multinomial logistic regression; a training fold holding a single
    subclass predicts it (LogisticRegression itself refuses one class). Built on first use, so
    scikit-learn loads when the probe runs, not with the plugin."""
    from sklearn.linear_model import LogisticRegression

    class Probe(LogisticRegression):
        __doc__ = probe_class.__doc__

        def fit(self, x, y, sample_weight=None):
            y = np.asarray(y)
            self.single_ = y[0] if len(np.unique(y)) < 2 else None
            return self if self.single_ is not None else super().fit(x, y, sample_weight)

        def predict(self, x):
            return np.full(len(x), self.single_) if self.single_ is not None else super().predict(x)

    return Probe


def fold_designs(
    frame: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    folds: list[tuple[np.ndarray, np.ndarray]],
) -> list[tuple]:
    """Per fold (train rows, test rows, their design matrices), the design fitted on the training
    fold alone. The design is unsupervised (imputation, scaling, one-hot), so the real labels and
    every shuffle share it: fitted once per fold instead of once per fold and shuffle."""
    out = []
    with warnings.catch_warnings():  # a level seen only in a test fold is encoded as all zeros
        warnings.filterwarnings("ignore", message="Found unknown categories")
        for train, test in folds:
            fitted = design(numeric, categorical).fit(frame.iloc[train])
            out.append((train, test, fitted.transform(frame.iloc[train]), fitted.transform(frame.iloc[test])))
    return out


def out_of_fold_bacc(designs: list[tuple], y: np.ndarray) -> float:
    """Balanced accuracy of the out-of-fold predictions of the probe over the folds of `designs`
    (`fold_designs`): what scikit-learn's cross_val_predict of the design + probe pipeline gives."""
    predicted = np.empty_like(y)
    # newton-cholesky: few metadata features, many rows; ~20x faster than lbfgs here
    with warnings.catch_warnings():  # a tiny fold's Newton step falls back to lbfgs
        warnings.filterwarnings("ignore", message="Line search of Newton solver")
        for train, test, x_train, x_test in designs:
            probe = probe_class()(solver="newton-cholesky", max_iter=1000, class_weight="balanced")
            predicted[test] = probe.fit(x_train, y[train]).predict(x_test)
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, predicted))


def usable_folds(subclass: np.ndarray, groups: np.ndarray, n_splits: int) -> int:
    """n_splits, lowered to the fewest patients any subclass has (each test fold should see
    every subclass); below 2 the class cannot be cross-validated."""
    patients = [len(np.unique(groups[subclass == s])) for s in np.unique(subclass)]
    return min(n_splits, min(patients))


def confounder_probe(
    meta: pd.DataFrame,
    subclass: np.ndarray,
    groups: np.ndarray,
    seed: int,
    n_splits: int = 5,
    n_permutations: int = 10,
    columns: list[str] | None = None,
    near_chance_tol: float = 0.05,
) -> dict:
    """The probe for ONE class: bAcc, PermbAcc (mean over `n_permutations` shuffles), their gap
    and NearChance, plus the folds used and a permutation p-value (share of shuffles, counting
    the real labels, scoring at least bAcc). Returns {"skipped": reason, ...} when the class
    cannot be probed (one subclass, no usable metadata, too few patients per subclass)."""
    subclass, groups = np.asarray(subclass), np.asarray(groups)
    columns = metadata_columns(meta) if columns is None else list(columns)
    row = {"n": int(len(subclass)), "subclasses": int(len(np.unique(subclass))), "columns": columns}
    folds = usable_folds(subclass, groups, n_splits)
    reason = (
        "one subclass"
        if row["subclasses"] < 2
        else "no usable metadata columns"
        if not columns
        else "a subclass has a single patient (no cross-validation possible)"
        if folds < 2
        else None
    )
    if reason:
        return row | {"skipped": reason}
    frame, numeric, categorical = probe_frame(meta.reset_index(drop=True), columns)
    designs = fold_designs(frame, numeric, categorical, grouped_folds(subclass, groups, folds, seed))
    bacc = out_of_fold_bacc(designs, subclass)
    # shuffles reuse the folds (still patient-grouped; a shuffle is stratified on average)
    perm = np.array(
        [
            out_of_fold_bacc(designs, np.random.default_rng([seed, j]).permutation(subclass))
            for j in range(n_permutations)
        ]
    )
    return row | {
        "folds": folds,
        "chance": 1.0 / row["subclasses"],
        "bacc": bacc,
        "perm_bacc": float(perm.mean()),
        "perm_bacc_std": float(perm.std()),
        "gap": bacc - float(perm.mean()),
        "p_value": float((1 + np.sum(perm >= bacc)) / (1 + n_permutations)),
        "near_chance": bool(bacc - perm.mean() < near_chance_tol),
    }


def aggregate(rows: list[dict]) -> dict[str, float]:
    """Tab. 3 aggregates over the probed classes: macro means, sample-weighted means, the
    share of classes at chance and how many classes were probed."""
    done = [r for r in rows if "skipped" not in r]
    if not done:
        return {}
    weights = np.array([r["n"] for r in done], dtype=np.float64)
    metrics = {}
    for key in ("bacc", "perm_bacc", "gap"):
        values = np.array([r[key] for r in done])
        metrics[f"probe_{key}"] = float(values.mean())
        metrics[f"probe_{key}_weighted"] = float(np.average(values, weights=weights))
    metrics["probe_near_chance"] = float(np.mean([r["near_chance"] for r in done]))
    metrics["probe_classes"] = float(len(done))
    return metrics


PROBE_LABELS = {"bacc": "bAcc", "perm_bacc": "PermbAcc", "gap": "gap"}  # probe_<key> -> label (Tab. 3)


@register_evaluator("confounder")
class ConfounderProbe(Evaluator):
    """Metadata-only probe of the induced subclasses of every class with >= 2 of them.

    Uses `cell.prior.tensors["assignment"]` on the training split, its metadata table
    (`columns`, default `metadata_columns`) and `group_column` (the patient id) as CV groups.
    Metrics (Tab. 3): `probe_bacc`, `probe_perm_bacc`, `probe_gap` (bAcc - PermbAcc), each
    macro over probed classes and sample-weighted (`_weighted`), `probe_near_chance` (share of
    probed classes with gap < `near_chance_tol`) and `probe_classes`. Lower bAcc and gap mean
    subclasses less driven by acquisition, so those are lower-is-better and NearChance
    higher-is-better; the permutation level is a reference (marked lower only because every
    metric needs a direction); more probed classes is better. Per-class rows (skipped ones
    with their reason) go to out_dir/confounder.json. Returns {} (logged) without metadata or
    induced subclasses.
    """

    applies_to = ("vector", "image")
    metrics = (
        *(
            Metric(f"probe_{key}{suffix}", label + what, False)
            for key, label in PROBE_LABELS.items()
            for suffix, what in (("", ""), ("_weighted", " weighted"))
        ),
        Metric("probe_near_chance", "NearChance", True),
        Metric("probe_classes", "probed classes", True),
    )
    higher_is_better = directions(metrics)

    def __init__(
        self,
        n_splits: int = 5,
        n_permutations: int = 10,
        columns: list[str] | None = None,
        group_column: str = "subject",
        near_chance_tol: float = 0.05,
    ):
        if not is_int(n_splits) or n_splits < 2:
            raise BenchError(
                f"confounder.n_splits must be an integer >= 2 (cross-validation folds), got {n_splits!r}"
            )
        if not is_int(n_permutations) or n_permutations < 0:
            raise BenchError(f"confounder.n_permutations must be an integer >= 0, got {n_permutations!r}")
        names = isinstance(columns, (list, tuple)) and all(isinstance(c, str) for c in columns)
        if columns is not None and not names:
            raise BenchError(
                f"confounder.columns must be None or a list of metadata columns, "
                f"got {columns!r}; e.g. confounder.columns=[sex,view]"
            )
        if not isinstance(group_column, str):
            raise BenchError(f"confounder.group_column must be a metadata column name, got {group_column!r}")
        if not is_real(near_chance_tol) or near_chance_tol < 0:
            raise BenchError(f"confounder.near_chance_tol must be a number >= 0, got {near_chance_tol!r}")
        self.n_splits, self.n_permutations, self.columns = n_splits, n_permutations, columns
        self.group_column, self.near_chance_tol = group_column, near_chance_tol

    def evaluate(self, cell) -> dict[str, float]:
        """Per-class probes of the training split, aggregated; details to confounder.json."""
        meta = cell.train.meta
        if meta is None or (self.columns is None and not metadata_columns(meta)):
            log.info("confounder: the dataset has no usable metadata; skipped")
            return {}
        assignment = cell.induced_subclasses()
        if assignment is None:
            return {}
        meta, labels = meta.reset_index(drop=True), cell.train.y.numpy()
        groups = self._groups(meta)
        columns = self.columns or metadata_columns(meta)
        rows = []
        for c in split_classes(labels, assignment):
            rows_c = np.flatnonzero(labels == c)
            probe = confounder_probe(
                meta.iloc[rows_c],
                assignment[rows_c],
                groups[rows_c],
                cell.seed,
                self.n_splits,
                self.n_permutations,
                columns,
                self.near_chance_tol,
            )
            rows.append({"class": cell.class_names[c]} | probe)
        (cell.out_dir / DETAILS).write_text(
            json.dumps(
                {"near_chance_tol": self.near_chance_tol, "group_column": self.group_column, "classes": rows},
                indent=2,
            )
        )
        metrics = aggregate(rows)
        if not metrics:
            log.info("confounder: no class could be probed (see %s)", DETAILS)
        return metrics

    def _groups(self, meta: pd.DataFrame) -> np.ndarray:
        """Patient id per row; every row its own patient (logged) when the column is absent."""
        if self.group_column in meta.columns:
            return meta[self.group_column].astype(str).to_numpy()
        log.warning("confounder: no %r column; each image is treated as its own patient", self.group_column)
        return np.arange(len(meta)).astype(str)
