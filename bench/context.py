"""What evaluators see of one finished grid cell."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.dataset import Dataset, Split

log = logging.getLogger(__name__)
FEATURE_SETS = ("train", "test", "synthetic", "synthetic_init", "synthetic_source", "generative")
REAL_SETS = ("train", "test")  # their features do not depend on the cell's method: shared across cells
INIT = "@init"  # metric suffix: the untrained backbone's samples (sample.init_reference)
SOURCE = "@source"  # metric suffix: the method's source draws x0, decoded with no flow
REFERENCE_SETS = ((INIT, "synthetic_init"), (SOURCE, "synthetic_source"))


@dataclass
class CellContext:
    """A cell's data and artifacts, all in data space (decoded), for evaluators.

    `synthetic` holds the generated samples with their class labels (and, for subclass
    methods, the sampled subclass in `subclass`). `synthetic_init` holds samples drawn with
    the same noise from the untrained backbone, when the run asked for that reference.
    `synthetic_source` holds the method's source draws x0 for the same samples (the points the
    ODE starts from, drawn exactly as at sampling time) decoded with no flow at all: scored by
    the same evaluators as `<metric>@source`, it shows what the learned flow adds to the source.
    It is sized like the set the generative metrics score (`generative_set`), so its first rows
    are the very x0 of the synthetic set.
    `generative`, when the run asked for one (`generative.n_total`, bench.metrics.generative), is the
    larger sample set that the generative metrics (FID, IRS) score instead of `synthetic`.
    `latents` are the training split's latents (row-aligned with `train`, memory-mapped) and
    `prior` the method's fitted prior (None for methods without one; optprior's holds the
    induced subclass of every training row in `prior.tensors["assignment"]` and its transport
    geometry and Bayes-risk estimate in `prior.info`). `targets` is the augmentation plan
    (bench.data.targets.ClassTarget per class). `shared` names where the dataset's method-independent
    results (the no-augmentation and remedy classifiers) are stored once for every method.
    `features(name)` gives features from the cell's feature network (`features.network`: the domain
    network or a pretrained one; built on first use, cached per dataset on disk and per cell in
    memory; the real sets' features also on disk across cells, bench.metrics.features); every call
    counts in `feature_reads`, so the runner knows which evaluators' numbers depend on it.
    Evaluators may write files (figures) into `out_dir`, and put small JSON-able values that
    tables and figures need beyond the flat metrics (per-seed scores, per-class values,
    histograms) into `details[<evaluator name>]`: the runner stores them in the record, so
    reports are built from records alone.
    """

    dataset: Dataset
    train: Split
    test: Split
    synthetic: Split
    out_dir: Path
    seed: int
    synthetic_init: Split | None = None
    generative: Split | None = None
    synthetic_source: Split | None = None
    latents: torch.Tensor | None = None
    prior: object | None = None
    targets: list | None = None
    extractor: Callable[[], object] | None = None  # returns a bench.metrics.features.FeatureExtractor
    # (folder, config hash) where results that do not depend on the method are shared by the
    # dataset's cells (the downstream classifiers on real data alone); None: compute them per cell
    shared: tuple[Path, str] | None = None
    # `timer(name)`: a context manager that records the seconds of a part of an evaluator's work as
    # the stage `evaluate/<name>` of the record (None: not recorded)
    timer: Callable[[str], AbstractContextManager] | None = None
    details: dict = field(default_factory=dict)
    feature_reads: int = 0
    # metric -> the features it was computed on (bench.metrics.feature_names), filled by the runner
    feature_metrics: dict = field(default_factory=dict, repr=False)
    _features: dict = field(default_factory=dict, repr=False)

    def timed(self, name: str) -> AbstractContextManager:
        """Time a part of an evaluator's work as the record's stage `evaluate/<name>`."""
        return self.timer(name) if self.timer is not None else nullcontext()

    @property
    def class_names(self) -> list[str]:
        """Class names of the dataset, index-aligned with labels."""
        return list(self.dataset.class_names)

    @property
    def augmented_classes(self) -> list[int]:
        """Classes the augmentation plan gives synthetic images (ULT / LT / MT), by index."""
        return [c for c, t in enumerate(self.targets or []) if t.synthetic > 0]

    @property
    def generative_set(self) -> str:
        """The set generative metrics score: "generative" when the cell has one, else "synthetic"."""
        return "generative" if self.generative is not None else "synthetic"

    def scored_sets(self, main: str) -> list[tuple[str, str]]:
        """(metric suffix, set name): `main` with no suffix, then each reference set the cell has
        (`@init` the untrained backbone, `@source` the source alone), so evaluators score them alike."""
        return [("", main)] + [
            (suffix, name) for suffix, name in REFERENCE_SETS if getattr(self, name) is not None
        ]

    def induced_subclasses(self) -> np.ndarray | None:
        """The method's induced subclass of every training row, or None (logged) when it has none."""
        tensors = getattr(self.prior, "tensors", None) or {}
        if "assignment" not in tensors:
            log.info(
                "subclass evaluators: the method has no induced subclasses (no prior assignment); skipped"
            )
            return None
        assignment = np.asarray(torch.as_tensor(tensors["assignment"]).cpu().numpy(), dtype=np.int64)
        if len(assignment) != len(self.train):
            raise ValueError(
                f"prior assignment has {len(assignment)} rows, the train split {len(self.train)}"
            )
        return assignment

    def split(self, name: str) -> Split:
        """One of FEATURE_SETS as a Split."""
        if name not in FEATURE_SETS:
            raise ValueError(f"unknown set {name!r}; one of {FEATURE_SETS}")
        split = getattr(self, name)
        if split is None:
            raise ValueError(f"this cell has no {name} set")
        return split

    def features(self, name: str) -> np.ndarray:
        """(N, d) float64 features of the named set, row-aligned with its Split."""
        self.feature_reads += 1
        if name not in self._features:
            if self.extractor is None:
                raise ValueError("this cell has no feature extractor")
            extractor, split = self.extractor(), self.split(name)
            if name in REAL_SETS and hasattr(extractor, "embed_split"):  # stored across cells
                self._features[name] = np.asarray(extractor.embed_split(split), dtype=np.float64)
            else:
                self._features[name] = np.asarray(extractor.embed(split.x), dtype=np.float64)
        return self._features[name]
