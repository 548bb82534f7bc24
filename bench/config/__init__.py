"""The configuration wing: gin files, parsing, overrides and every user setting with its checks.

Importing the package registers every gin configurable of bench's own settings (`pipeline`, `grid`,
`train`, `sample`, `source`, `targets`, `data_split`, `generative`, `features`, `loader`, `budget`,
`executor`), so they exist before any configuration is parsed (gin refuses new configurables after
a parse); no torch is imported. Plugins register theirs when the registry loads them.
"""

from bench.config import (
    cell_config,
    data,
    evaluation,
    executor_settings,
    grid_axes,
    loader,
    pipeline_config,
    sample,
    throughput,
    train,
)

__all__ = [
    "cell_config",
    "data",
    "evaluation",
    "executor_settings",
    "grid_axes",
    "loader",
    "pipeline_config",
    "sample",
    "throughput",
    "train",
]
