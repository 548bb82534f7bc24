"""Where cells run, as the user configures it: `executor.param=value` (gin scope `executor`).

The settings live apart from the executors themselves (bench/scale/executors.py) so that the gin
configurable exists before any cell's configuration is parsed (gin refuses new configurables
after a parse) without the cell pipeline importing the scale-out wing. Where a cell runs never
changes what it computes: these bindings never reach a cell's configuration or hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import gin

from bench.config.checks import is_int, is_real
from bench.errors import BenchError


@gin.configurable("executor")
@dataclass
class ExecutorConfig:
    """Resources of one cell's job, and how many cells run at once (executors local and slurm)."""

    folder: Optional[str] = None  # job files and logs; default <results_dir>/<experiment>/.submitit
    timeout_min: int = 24 * 60  # wall time of one job; a cell reaching it is requeued and resumes
    timeout_requeues: int = 3  # how often a timed-out cell is requeued (preemptions do not count)
    array_parallelism: Optional[int] = None  # cells running at once; default local 1, slurm 256
    gpus_per_node: Optional[int] = None  # GPUs of one cell; default local: all visible, slurm: 0
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[float] = None
    tasks_per_node: int = 1  # processes per cell and node (data-parallel or sharded training); e.g. = gpus_per_node
    nodes: int = 1  # nodes of one cell (executor=slurm): nodes x tasks_per_node processes train it together
    partition: Optional[str] = None  # Slurm partition
    slurm_extra: dict = field(default_factory=dict)  # other Slurm parameters, e.g. {'qos': 'high'}
    # memory of one device a cell trains on, checked against each cell's estimated footprint
    # before anything runs (bench.pipeline.footprint); default: the first GPU's, else the RAM
    device_memory_gib: Optional[float] = None
    # executor=inline: cells run side by side in worker processes, each on its share of the cores
    # (bench.scale.pool); default (None) automatic: on a CPU-only machine min(cells, cores, 4), else 1
    cells_at_once: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("timeout_min", "array_parallelism", "cpus_per_task", "tasks_per_node", "nodes",
                     "cells_at_once"):
            _check(name, getattr(self, name), is_int, lambda v: v >= 1, "a positive integer")
        for name in ("timeout_requeues", "gpus_per_node"):
            _check(name, getattr(self, name), is_int, lambda v: v >= 0, "a non-negative integer")
        _check("mem_gb", self.mem_gb, is_real, lambda v: v > 0, "a positive number")
        _check("device_memory_gib", self.device_memory_gib, is_real, lambda v: v > 0, "a positive number")
        if not isinstance(self.slurm_extra, dict):
            raise BenchError(f"executor.slurm_extra must be a dict of Slurm parameters, e.g. "
                             f"{{'qos': 'high'}}; got {self.slurm_extra!r}")
        import submitit  # imported here: a cell's configuration needs the settings, not submitit

        known = submitit.SlurmExecutor._valid_parameters()
        unknown = sorted(set(self.slurm_extra) - known)
        if unknown:
            raise BenchError(f"executor.slurm_extra: unknown Slurm parameter(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")

    @property
    def processes(self) -> int:
        """The processes one cell runs on as a job: tasks_per_node on each of its nodes."""
        return self.nodes * self.tasks_per_node

    def parameters(self, cluster: str, name: str) -> dict:
        """Arguments of submitit's `update_parameters`; the `slurm_` ones are ignored locally."""
        gpus = self.gpus_per_node
        if gpus is None and cluster == "local":
            import torch

            gpus = torch.cuda.device_count()  # a local job sees the GPUs this process sees
        slurm = {"partition": self.partition, "array_parallelism": self.array_parallelism,
                 **self.slurm_extra}
        params = {"name": name, "timeout_min": self.timeout_min, "gpus_per_node": gpus, "nodes": self.nodes,
                  "tasks_per_node": self.tasks_per_node, "cpus_per_task": self.cpus_per_task,
                  "mem_gb": self.mem_gb, **{f"slurm_{k}": v for k, v in slurm.items()}}
        return {k: v for k, v in params.items() if v is not None}


def _check(name: str, value, type_ok, range_ok, what: str) -> None:
    """A setting is None (backend default) or `what`."""
    if value is not None and not (type_ok(value) and range_ok(value)):
        raise BenchError(f"executor.{name} must be {what}, got {value!r}")
