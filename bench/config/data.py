"""Data settings: the augmentation targets' grouping (`targets`, bench.data.targets) and whether a
cell's split follows its generative seed (`data_split`, bench.data.split_seed)."""

from __future__ import annotations

from collections.abc import Sequence

from bench.config.checks import Settings, require, setting, settings

REFERENCES = ("largest_finding", "largest")


@settings("targets", frozen=True)
class AugmentationTargets(Settings):
    """Thresholds and targets of the ULT / LT / MT / Head grouping (bench.data.targets.augmentation_plan)."""

    ult_below: float = setting(0.01)
    ult_to: float = setting(0.05, minimum=0)
    lt_below: float = setting(0.05)
    lt_to: float = setting(0.10, minimum=0)
    mt_below: float = setting(0.20)
    mt_extra: float = setting(0.5, minimum=0)
    reference: str = setting("largest_finding", choices=REFERENCES)
    untouched: Sequence[str] = setting(("No Finding",))

    def __post_init__(self):
        super().__post_init__()
        require(
            [
                (
                    0 < self.ult_below <= self.lt_below <= self.mt_below,
                    "targets thresholds must satisfy 0 < ult_below <= lt_below <= mt_below "
                    f"(got {self.ult_below}, {self.lt_below}, {self.mt_below})",
                )
            ]
        )


@settings("data_split", wording="{key} takes {what}, got {value}")
class DataSplit(Settings):
    """`tie_to_seed`: draw the dataset's splits from the cell's generative seed (default False;
    bench.data.split_seed)."""

    tie_to_seed: bool = setting(False)
