"""Where cells run, as the user configures it: `executor.param=value` (gin scope `executor`).

The settings live apart from the executors themselves (bench/scale/executors.py) so that the gin
configurable exists before any cell's configuration is parsed (gin refuses new configurables
after a parse) without the cell pipeline importing the scale-out wing. Where a cell runs never
changes what it computes: these bindings never reach a cell's configuration or hash.
"""

from __future__ import annotations

from bench.config.checks import Settings, setting, settings
from bench.config.extras import require_extra
from bench.errors import BenchError

POSITIVE = {"minimum": 1, "what": "a positive integer"}
NON_NEGATIVE = {"minimum": 0, "what": "a non-negative integer"}
POSITIVE_NUMBER = {"above": 0, "what": "a positive number"}


@settings("executor")
class ExecutorConfig(Settings):
    """Resources of one cell's job, and how many cells run at once (executors local and slurm);
    None leaves a setting to the backend's default."""

    folder: str | None = None  # job files and logs; default <results_dir>/<experiment>/.submitit
    # wall time of one job; a cell reaching it is requeued and resumes
    timeout_min: int = setting(24 * 60, **POSITIVE)
    # how often a timed-out cell is requeued (preemptions do not count)
    timeout_requeues: int = setting(3, **NON_NEGATIVE)
    # cells running at once; default local 1, slurm 256
    array_parallelism: int | None = setting(None, **POSITIVE)
    # GPUs of one cell; default local: all visible, slurm: 0
    gpus_per_node: int | None = setting(None, **NON_NEGATIVE)
    cpus_per_task: int | None = setting(None, **POSITIVE)
    mem_gb: float | None = setting(None, **POSITIVE_NUMBER)
    # processes per cell and node (data-parallel or sharded training); e.g. = gpus_per_node
    tasks_per_node: int = setting(1, **POSITIVE)
    # nodes of one cell (executor=slurm): nodes x tasks_per_node processes train it together
    nodes: int = setting(1, **POSITIVE)
    partition: str | None = None  # Slurm partition
    # other Slurm parameters, e.g. {'qos': 'high'}
    slurm_extra: dict = setting(
        factory=dict, message="{key} must be a dict of Slurm parameters, e.g. {{'qos': 'high'}}; got {value}"
    )
    # memory of one device a cell trains on, checked against each cell's estimated footprint
    # before anything runs (bench.pipeline.footprint); default: the first GPU's, else the RAM
    device_memory_gib: float | None = setting(None, **POSITIVE_NUMBER)
    # executor=inline: cells run side by side in worker processes, each on its share of the cores
    # (bench.scale.pool); default (None) automatic: on a CPU-only machine min(cells, cores, 4), else 1
    cells_at_once: int | None = setting(None, **POSITIVE)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.slurm_extra:
            return
        require_extra("submitit", "executor.slurm_extra")
        import submitit  # imported here: a cell's configuration needs the settings, not submitit

        known = submitit.SlurmExecutor._valid_parameters()
        unknown = sorted(set(self.slurm_extra) - known)
        if unknown:
            raise BenchError(
                f"executor.slurm_extra: unknown Slurm parameter(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )

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
        slurm = {"partition": self.partition, "array_parallelism": self.array_parallelism, **self.slurm_extra}
        params = {
            "name": name,
            "timeout_min": self.timeout_min,
            "gpus_per_node": gpus,
            "nodes": self.nodes,
            "tasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "mem_gb": self.mem_gb,
            **{f"slurm_{k}": v for k, v in slurm.items()},
        }
        return {k: v for k, v in params.items() if v is not None}
