"""One cell's settings together: every settings object its stages read, built once from the cell's
parsed gin configuration (bench.pipeline.assemble.build_cell) and stored in its record (`settings`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bench.config.data import AugmentationTargets, DataSplit
from bench.config.evaluation import FeatureConfig, GenerativeSet
from bench.config.extras import require_network
from bench.config.pipeline_config import PipelineConfig
from bench.config.sample import SampleConfig, SourceSubset
from bench.config.train import TrainConfig


@dataclass(frozen=True)
class CellConfig:
    """The settings of one cell, each the gin configurable of its scope.

    `features` (the domain feature network) is set only for image cells, the ones whose
    evaluators may embed images with it. Where cells run (`executor`), how classifier batches
    are read (`loader`) and the throughput estimates assume (`budget`) are not part of a cell:
    they change nothing it computes.
    """

    pipeline: PipelineConfig
    train: TrainConfig
    sample: SampleConfig
    source: SourceSubset
    targets: AugmentationTargets
    generative: GenerativeSet
    data_split: DataSplit
    features: FeatureConfig | None = None

    @classmethod
    def parsed(cls, image: bool) -> CellConfig:
        """Every settings object from the gin configuration parsed now; `features` for an image cell."""
        return cls(
            PipelineConfig(),
            TrainConfig(),
            SampleConfig(),
            SourceSubset(),
            AugmentationTargets(),
            GenerativeSet(),
            DataSplit(),
            _features() if image else None,
        )

    def to_json(self) -> dict:
        """{scope: {parameter: value}} as plain JSON values (tuples as lists), for the record."""
        return {
            f.name: _plain(dataclasses.asdict(value)) if value is not None else None
            for f in dataclasses.fields(self)
            for value in [getattr(self, f.name)]
        }


def _features() -> FeatureConfig:
    """The domain feature network's settings; a MONAI architecture needs the `paper` extra."""
    config = FeatureConfig()
    if getattr(config, "network", "domain") == "domain":
        require_network(config.arch, "features.arch")
    return config


def _plain(value):
    """`value` with tuples turned into lists, recursively (JSON has only lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
