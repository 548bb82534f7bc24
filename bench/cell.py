"""What evaluators see of one finished grid cell."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.dataset import Dataset, Split


@dataclass
class CellContext:
    """A cell's data and artifacts, all in data space (decoded), for evaluators.

    `synthetic` holds the generated samples with their class labels (and, for subclass
    methods, the sampled subclass in `subclass`). `synthetic_init` holds samples drawn with
    the same noise from the untrained backbone, when the run asked for that reference.
    Evaluators may write files (figures) into `out_dir`.
    """

    dataset: Dataset
    train: Split
    test: Split
    synthetic: Split
    out_dir: Path
    seed: int
    synthetic_init: Optional[Split] = None

    @property
    def class_names(self) -> list[str]:
        """Class names of the dataset, index-aligned with labels."""
        return list(self.dataset.class_names)
