"""Executors of `bench run`: where the cells of a validated grid run.

- `inline` (default): the cells on this machine, one after another in this process, or
  `executor.cells_at_once` side by side in worker processes (bench.scale.pool; by default on a
  machine without a GPU).
- `local`: each cell in its own subprocess (submitit's LocalExecutor), `executor.array_parallelism`
  of them at a time (default 1), so a crash, a leak or a kill in one cell spares the others.
- `slurm`: one Slurm array task per cell (submitit's AutoExecutor), at most
  `executor.array_parallelism` running at once.

gin's configuration lives in one process, so a job receives the cell's spec and the whole
RunRequest (gin files and bindings) and rebuilds the cell itself through `execute_cell`. The job
is Checkpointable: when Slurm preempts it or it reaches `executor.timeout_min`, submitit requeues
the same cell, which skips its finished stages and resumes training from its newest checkpoint
(`train.checkpoint_every`). Every executor returns one CellOutcome per cell, in grid order, so
`run_grid` treats them alike; a job that raised or was killed becomes a failed outcome with a
one-line reason and its trace in the cell's failure.json.

`executor.tasks_per_node=N` runs each cell on N processes (one per GPU on a GPU node), and with
`executor.nodes=M` (slurm) on N processes on each of M nodes: every task exports torch.distributed's
variables from submitit's task environment (the first node hosts the rendezvous) and the cell
trains with DDP, or sharded with `train.sharding='fsdp'`, and samples sharded
(bench.runtime.distributed). Inline, launch bench itself on N processes instead
(`torchrun --nproc_per_node N -m bench run ...`).

The settings of the local and slurm executors are the gin bindings `executor.<param>=value` of
`ExecutorConfig`, parsed apart from the cells' configuration: where a cell runs must not change
its config hash.
"""

from __future__ import annotations

import logging
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

try:  # the `slurm` extra: executor=local|slurm; get_executor refuses them without it, in one line
    import submitit
    from submitit.core.utils import FailedJobError

    _Checkpointable = submitit.helpers.Checkpointable
except ImportError:
    submitit, FailedJobError, _Checkpointable = None, (), object  # isinstance(x, ()) is False

from bench.config.executor_settings import ExecutorConfig
from bench.config.extras import require_extra
from bench.config.gin_config import parse
from bench.errors import BenchError
from bench.pipeline.assemble import CellSpec, RunRequest, load_plugins
from bench.pipeline.execute import FAILURE, CellOutcome, execute_cell
from bench.runtime import distributed, progress
from bench.scale import pool
from bench.store.artifacts import write_json_atomic

log = logging.getLogger(__name__)
EXECUTORS = ("inline", "local", "slurm")
POLL_S = {"local": 1.0, "slurm": 30.0}  # seconds between two looks at the running jobs
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*: ")  # "module.Error: message" in a traceback


def get_executor(request: RunRequest):
    """The executor `request.executor` names, with its settings checked; nothing is written."""
    if request.executor not in EXECUTORS:
        raise BenchError(f"unknown executor {request.executor!r} (known: {', '.join(EXECUTORS)})")
    load_plugins()  # gin locks its registry at the first parse: every configurable must exist
    parse([], request.executor_bindings)  # only the executor's bindings: none reach a cell
    config = ExecutorConfig()
    if config.nodes > 1 and request.executor != "slurm":
        raise BenchError(
            f"executor.nodes={config.nodes} applies to executor=slurm (one cell across nodes); "
            f"executor={request.executor} runs on this machine: drop executor.nodes"
        )
    if request.executor == "inline":
        if config.tasks_per_node > 1:
            raise BenchError(
                "executor.tasks_per_node applies to executor=local or slurm; to run "
                "inline on N processes use: torchrun --nproc_per_node N -m bench run ..."
            )
        return InlineExecutor(request, config)
    require_extra("submitit", f"executor={request.executor}")
    if distributed.launched():
        raise BenchError(
            f"executor={request.executor} submits jobs: start bench as one process "
            "(not under torchrun) and set executor.tasks_per_node for processes per cell"
        )
    if request.executor == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
        raise BenchError(
            "executor=slurm: no Slurm here (srun not found); run bench on a Slurm "
            "login node, or use executor=local"
        )
    return SubmititExecutor(request, request.executor, config)


@dataclass
class InlineExecutor:
    """The cells on this machine: one after another in this process, or `executor.cells_at_once`
    of them side by side in worker processes (bench.scale.pool; by default on a CPU-only machine)."""

    request: RunRequest
    config: ExecutorConfig = field(default_factory=ExecutorConfig)

    def run(self, specs: list[CellSpec], start_order: list[CellSpec] | None = None) -> list[CellOutcome]:
        """Each cell's outcome, in the order of `specs`; side by side, the cells start in
        `start_order` (longest first, bench.scale.pool.longest_first), one at a time in grid order."""
        k = pool.cells_at_once(self.config.cells_at_once, len(specs), launched=distributed.launched())
        if k > 1:
            order = start_order or specs
            done = dict(zip(order, pool.run_side_by_side(order, self.request, k)))
            return [done[spec] for spec in specs]
        outcomes = []
        for i, spec in enumerate(specs, 1):
            log.info("[%d/%d] %s", i, len(specs), spec.label)
            progress.set_cell(f"[{i}/{len(specs)}] {spec.label}")
            outcomes.append(execute_cell(spec, self.request))
        return outcomes


class CellJob(_Checkpointable):
    """A submitit job running one cell; on preemption or timeout the same cell is requeued."""

    def __init__(self, request: RunRequest):
        self.request = request

    def __call__(self, spec: CellSpec) -> CellOutcome:
        _job_logging()
        join_cell_processes()
        log.info("%s: running", spec.label)
        try:
            outcome = execute_cell(spec, self.request)
        except BaseException:
            distributed.finish(wait=False)
            raise
        distributed.finish()  # close the process group before the task exits
        return outcome

    def checkpoint(self, spec: CellSpec) -> submitit.helpers.DelayedSubmission:
        """Resubmit the cell: it resumes from its finished stages and its training checkpoint."""
        log.warning("%s: preempted or timed out; requeued", spec.label)
        return submitit.helpers.DelayedSubmission(CellJob(self.request), spec)


def join_cell_processes() -> None:
    """Make this task one rank of its cell when the job has several (executor.tasks_per_node on
    each of executor.nodes): torch.distributed's variables from submitit's task environment, the
    rendezvous on the job's first node, every GPU visible (accelerate picks the local rank's)."""
    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def _job_logging() -> None:
    """bench's progress at INFO, with timestamps, in the job's stderr log (submitit's folder)."""
    bench_log = logging.getLogger("bench")
    if not bench_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        bench_log.addHandler(handler)
    bench_log.setLevel(logging.INFO)


class SubmititExecutor:
    """Each cell as a submitit job: local subprocesses, or the tasks of one Slurm array."""

    def __init__(self, request: RunRequest, cluster: str, config: ExecutorConfig):
        self.request, self.cluster, self.config = request, cluster, config
        default = Path(request.results_dir) / request.experiment / ".submitit"
        self.folder = Path(config.folder) if config.folder else default

    def backend(self) -> submitit.AutoExecutor:
        """submitit's executor with the settings applied (this creates the log folder)."""
        options = {"max_num_timeout": self.config.timeout_requeues, "python": _job_python()}
        executor = submitit.AutoExecutor(
            folder=self.folder, cluster=self.cluster, **{f"{self.cluster}_{k}": v for k, v in options.items()}
        )
        name = f"bench-{self.request.experiment}"
        try:
            executor.update_parameters(**self.config.parameters(self.cluster, name))
        except (AssertionError, NameError, ValueError) as exc:
            raise BenchError(f"executor settings: {str(exc).splitlines()[0]}") from None
        return executor

    def run(self, specs: list[CellSpec], start_order: list[CellSpec] | None = None) -> list[CellOutcome]:
        """Submit the cells (the local executor `array_parallelism` at a time); wait for all.
        (`start_order` is ignored: submitit decides when each job starts.)"""
        backend, job = self.backend(), CellJob(self.request)
        window = len(specs) if self.cluster == "slurm" else (self.config.array_parallelism or 1)
        log.info("%d cell(s) as %s jobs; job logs in %s", len(specs), self.cluster, self.folder)
        pending, running, outcomes = list(specs), [], {}
        try:
            while pending or running:
                free = window - len(running)
                if pending and free > 0:
                    running += zip(pending[:free], backend.map_array(job, pending[:free]))
                    pending = pending[free:]
                states = [(spec, sjob, sjob.done()) for spec, sjob in running]
                running = [(spec, sjob) for spec, sjob, done in states if not done]
                for spec, sjob in ((s, j) for s, j, done in states if done):
                    outcomes[spec] = self._outcome(spec, sjob)
                    _log_outcome(len(outcomes), len(specs), outcomes[spec])
                if len(running) == len(states):
                    time.sleep(POLL_S[self.cluster])
        except KeyboardInterrupt:
            self._interrupted([sjob for _, sjob in running])
            raise
        return [outcomes[spec] for spec in specs]

    def _outcome(self, spec: CellSpec, sjob) -> CellOutcome:
        """The job's CellOutcome, or a failed one if the job raised or ended without a result."""
        try:
            return sjob.results()[0]  # rank 0's outcome when the cell ran on several tasks
        except Exception as exc:  # the job raised (outside execute_cell's isolation) or was killed
            return job_failure(spec, sjob, exc, self.request.results_dir)

    def _interrupted(self, jobs: list) -> None:
        """Ctrl-C: local jobs stop with bench; Slurm jobs go on (rerunning skips finished cells)."""
        if self.cluster == "local":
            for sjob in jobs:
                sjob.cancel(check=False)
        elif jobs:
            log.warning(
                "%d Slurm job(s) keep running (scancel %s stops them)",
                len(jobs),
                jobs[0].job_id.split("_")[0],
            )


def _job_python() -> str:
    """This interpreter for the jobs, without the working folder on sys.path (`-P`, Python 3.11+).

    submitit starts a job with `python -m`, which puts the working folder first on sys.path: run
    from a checkout of bench, the job would import the source folder `bench/` instead of the
    installed package (whose `bench.gin`, `bench.methods`, ... live elsewhere in the checkout).
    """
    python = shlex.quote(sys.executable)
    return f"{python} -P" if sys.version_info >= (3, 11) else python


def job_failure(spec: CellSpec, sjob, exc: Exception, results_dir: Path) -> CellOutcome:
    """A failed outcome for a job that raised or ended without a result; details to failure.json."""
    text = str(exc)
    if isinstance(exc, FailedJobError):
        lines = [line for line in text.splitlines() if _EXCEPTION_LINE.match(line)]
        reason = f"job {sjob.job_id} raised {lines[-1] if lines else type(exc).__name__}"
    else:
        reason = f"job {sjob.job_id} ended without a result (state {sjob.state}; killed?)"
    reason += f"; log {sjob.paths.stderr}"
    log.error("%s failed: %s", spec.label, reason)
    try:
        write_json_atomic(
            spec.folder(results_dir) / FAILURE, {"status": "failed", "reason": reason, "traceback": text}
        )
    except OSError as err:
        log.warning("%s: could not write %s: %s", spec.label, FAILURE, err)
    return CellOutcome(spec.label, "failed", reason=reason)


def _log_outcome(k: int, n: int, outcome: CellOutcome) -> None:
    """One line per finished job, as the inline executor logs one per started cell."""
    detail = f": {outcome.reason}" if outcome.reason else ""
    log.info("[%d/%d] %s: %s%s", k, n, outcome.label, outcome.status, detail)
