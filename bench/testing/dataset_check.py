"""`check_dataset`: a dataset plugin against what the pipeline reads of it (bench/dataset.py).

Its class names, kind and split names; every split it names (train, eval and val) loaded twice
(the same both times: cached latents and fingerprints assume it) as a Split whose rows agree,
labels int64 within the classes, samples float32 of one shape per kind ((N, D) vectors or
(N, C, H, W) images), finite, with optional subclasses, metadata and ids of the same length;
`describe` JSON-able. A dataset that needs the user's files (`missing_settings`) is skipped,
naming them, unless `settings` gives them.
"""

from __future__ import annotations

import torch

from bench.dataset import Dataset, Split
from bench.testing.probe import Probe, resolve

HOOKS = {"load": ("split",), "missing_settings": (), "describe": ()}
KINDS = {"vector": 2, "image": 4}  # the dimensions of a split's x
ROWS_READ = 16  # rows of a lazy (file-backed) split decoded for the value checks


def check_dataset(plugin, settings: dict | None = None) -> None:
    """Check a dataset class (or registered name) against the dataset contract; ContractFailure if
    not. `settings`: constructor keyword arguments (a local `root`, a smaller size). A dataset whose
    `missing_settings()` is not empty is skipped (unittest.SkipTest, a pytest skip) with what it needs."""
    probe = Probe("dataset", resolve("dataset", plugin))
    probe.require_hooks(HOOKS, base=Dataset, written=("load",))
    dataset = probe.construct(settings)
    probe.require_signatures(dataset, HOOKS)
    probe.skip_unless_configured(dataset, "check_dataset")
    names = _check_attributes(probe, dataset)
    splits = [dataset.train_split, dataset.eval_split] + ([dataset.val_split] if dataset.val_split else [])
    shape = None
    for split in dict.fromkeys(splits):
        loaded = _check_split(probe, dataset, split, len(names))
        again = probe.call("load", dataset.load, split)
        probe.expect(
            torch.equal(loaded.y, again.y) and torch.equal(_rows(loaded.x), _rows(again.x)),
            "load",
            f"returned another {split!r} split the second time, expected the same data for the same configuration",
        )
        if shape is not None:
            probe.expect(
                tuple(loaded.x.shape[1:]) == shape,
                "load",
                f"returned {split!r} samples of shape {tuple(loaded.x.shape[1:])} but {shape} in another split, "
                "expected one sample shape",
            )
        shape = tuple(loaded.x.shape[1:])
    description = probe.call("describe", dataset.describe)
    probe.jsonable("describe", description, keys=("name", "kind", "n_classes"))
    probe.expect(
        description["n_classes"] == len(names),
        "describe",
        f"returned n_classes={description['n_classes']!r}, expected {len(names)} (its class_names)",
    )


def _check_attributes(probe: Probe, dataset) -> list:
    """class_names (two or more distinct strings), kind, split names; returns the class names."""
    names = dataset.class_names
    probe.expect(
        isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names),
        "class_names",
        f"is {names!r}, expected a list of strings",
    )
    probe.expect(len(names) >= 2, "class_names", f"lists {len(names)} class(es), expected at least 2")
    probe.expect(
        len(set(names)) == len(names), "class_names", f"repeats a name in {names}, expected distinct names"
    )
    probe.expect(
        dataset.n_classes == len(names),
        "n_classes",
        f"is {dataset.n_classes!r}, expected len(class_names) = {len(names)}",
    )
    probe.expect(dataset.kind in KINDS, "kind", f"is {dataset.kind!r}, expected one of {sorted(KINDS)}")
    for hook in ("train_split", "eval_split"):
        value = getattr(dataset, hook)
        probe.expect(isinstance(value, str) and value, hook, f"is {value!r}, expected a split name")
    probe.expect(
        dataset.val_split is None or isinstance(dataset.val_split, str),
        "val_split",
        f"is {dataset.val_split!r}, expected None or a split name",
    )
    return list(names)


def _check_split(probe: Probe, dataset, split: str, n_classes: int) -> Split:
    """`load(split)`: a Split with aligned fields, labels in range, finite float32 samples."""
    loaded = probe.call("load", dataset.load, split)
    probe.expect(
        isinstance(loaded, Split),
        "load",
        f"returned a {type(loaded).__name__} for {split!r}, expected a bench.dataset.Split",
    )
    n = len(loaded.y) if isinstance(loaded.y, torch.Tensor) else -1
    what = f"returned {split!r} labels of"
    probe.labels("load", loaded.y, n, n_classes, what=what)
    probe.expect(n > 0, "load", f"returned an empty {split!r} split")
    x = loaded.x
    probe.expect(
        hasattr(x, "shape") and len(x) == n,
        "load",
        f"returned {split!r} with {len(x)} samples and {n} labels, expected one label per sample",
    )
    dims = KINDS[dataset.kind]
    probe.expect(
        len(x.shape) == dims,
        "load",
        f"returned {split!r} samples of shape {tuple(x.shape)}, expected {dims} dimensions for {dataset.kind} data",
    )
    probe.tensor("load", _rows(x), dtype=torch.float32, what=f"returned {split!r} samples with")
    if loaded.subclass is not None:
        probe.tensor(
            "load", loaded.subclass, shape=(n,), dtype=torch.int64, what=f"returned {split!r} subclasses of"
        )
    for field in ("meta", "ids"):
        value = getattr(loaded, field)
        probe.expect(
            value is None or len(value) == n,
            "load",
            f"returned {split!r} with {len(value) if value is not None else 0} {field} rows and {n} "
            "labels, expected one per sample",
        )
    if split == dataset.train_split:
        present = int(torch.bincount(loaded.y, minlength=n_classes).gt(0).sum())
        probe.expect(
            present >= 2, "load", f"returned a training split with {present} class(es), expected at least 2"
        )
    return loaded


def _rows(x) -> torch.Tensor:
    """The first rows of a split's samples as a tensor (a lazy file-backed split decodes only these)."""
    part = x[:ROWS_READ]
    return part if isinstance(part, torch.Tensor) else torch.as_tensor(part)
