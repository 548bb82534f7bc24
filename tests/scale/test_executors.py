"""Executors of `bench run`: local subprocesses equal inline, failures stay in their cell, and the
Slurm array gets the settings (built, never submitted: no Slurm here)."""

import json
import os
import pickle
import re
import signal
import time
from pathlib import Path

import pytest
import submitit
from submitit.slurm.slurm import _make_sbatch_string
from test_plugins import make_plugin

from bench.config.overrides import parse_overrides
from bench.errors import BenchError
from bench.pipeline.assemble import CellSpec, RunRequest
from bench.scale.executors import CellJob, SubmititExecutor, get_executor, join_cell_processes
from bench.scale.grid import run_grid

FAILING = '''
"""Methods that fail in training, each in its own way."""
import os
import signal

import bench
from bench.errors import BenchError


@bench.register_method("explode")
class Explode(bench.Method):
    def loss(self, backbone, batch):
        raise RuntimeError("exploded on purpose")


@bench.register_method("abort")
class Abort(bench.Method):
    def loss(self, backbone, batch):
        raise BenchError("aborted on purpose")


@bench.register_method("vanish")
class Vanish(bench.Method):
    def loss(self, backbone, batch):
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
'''
SMALL = [
    "datasets=[synthetic2d]",
    "seeds=[0]",
    "train.steps=50",
    "synthetic2d.n_max=400",
    "synthetic2d.n_test_per_class=50",
]


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    make_plugin(
        root,
        "failplug",
        FAILING,
        "explode = failplug:Explode\nabort = failplug:Abort\nvanish = failplug:Vanish",
    )
    return root


@pytest.fixture(scope="module")
def runs(plugin_dir, tmp_path_factory, bench_cli):
    """The grid {fm, explode} run inline, and as two concurrent local jobs (with executor settings)."""
    root = tmp_path_factory.mktemp("runs")
    env = {"PYTHONPATH": str(plugin_dir), "OMP_NUM_THREADS": "1"}
    out = {}
    for name, extra in (
        ("inline", []),
        ("local", ["executor=local", "executor.timeout_min=30", "executor.array_parallelism=2"]),
    ):
        out[name] = bench_cli(
            "run",
            "methods=[fm,explode]",
            *SMALL,
            *extra,
            f"results_dir={root / name}",
            cwd=root,
            env_extra=env,
        )
    return root, out


def cell(root, method):
    return root / "quick" / "synthetic2d" / method / "seed0"


@pytest.mark.slow
def test_local_jobs_write_the_records_inline_writes(runs):
    root, out = runs
    recs = [json.loads((cell(root / name, "fm") / "record.json").read_text()) for name in ("inline", "local")]
    assert recs[0]["metrics"] == recs[1]["metrics"]
    # executor.* settings stay out of the cell's config: the hash is the inline one
    assert recs[0]["config_hash"] == recs[1]["config_hash"]
    assert "swd/all" in out["local"].stdout and "2 cell(s) as local jobs" in out["local"].stderr
    assert len(list((root / "local" / "quick" / ".submitit").glob("*_0_log.out"))) == 2


@pytest.mark.slow
def test_a_failing_cell_in_a_local_job_is_reported_and_the_other_finishes(runs):
    root, out = runs
    for name in ("inline", "local"):
        assert out[name].returncode == 1, out[name].stderr
        failed = [line for line in out[name].stderr.splitlines() if line.startswith("bench: error: cell ")]
        assert len(failed) == 1, out[name].stderr
        assert failed[0].startswith(
            "bench: error: cell synthetic2d/explode/seed0 failed: "
            "RuntimeError: exploded on purpose (details: "
        )
        assert (cell(root / name, "fm") / "record.json").is_file()
    failure = json.loads((cell(root / "local", "explode") / "failure.json").read_text())
    assert 'raise RuntimeError("exploded on purpose")' in failure["traceback"]


@pytest.mark.slow
def test_a_job_that_raises_or_is_killed_becomes_a_failure(plugin_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setenv("PYTHONPATH", str(plugin_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # submitit waits this long for the result file of a job that ended without one
    monkeypatch.setattr(submitit.LocalJob, "_results_timeout_s", 1)
    ov = parse_overrides(["methods=[abort,vanish]", *SMALL])
    request = RunRequest(results_dir=tmp_path, bindings=ov.bindings, axes=ov.axes, executor="local")
    result = run_grid(request)
    assert result.records == [] and sorted(result.failures) == [
        "synthetic2d/abort/seed0",
        "synthetic2d/vanish/seed0",
    ]
    abort, vanish = result.failures["synthetic2d/abort/seed0"], result.failures["synthetic2d/vanish/seed0"]
    # BenchError while a cell runs in a job (bad data seen only there) fails that cell alone, with
    # its own one-line message (bench.pipeline.execute)
    assert abort == "aborted on purpose", abort
    assert re.fullmatch(r"job \d+ ended without a result \(state \w+; killed\?\); log \S+", vanish), vanish
    for method, expected in (("abort", "aborted on purpose"), ("vanish", "has not produced any output")):
        failure = json.loads((cell(tmp_path, method) / "failure.json").read_text())
        assert failure["reason"] == result.failures[f"synthetic2d/{method}/seed0"]
        assert expected in failure["traceback"]


def test_a_preempted_cell_is_resubmitted_as_the_same_cell(tmp_path):
    request = RunRequest(
        results_dir=tmp_path,
        gin_files=["x.gin"],
        bindings=["train.steps = 7"],
        executor="slurm",
        executor_bindings=["executor.partition = 'gpu'"],
    )
    spec = CellSpec("quick", "synthetic2d", "fm", 3)
    delayed = CellJob(request).checkpoint(spec)
    delayed = pickle.loads(pickle.dumps(delayed))  # what submitit stores for the requeued job
    assert isinstance(delayed.function, CellJob) and isinstance(
        delayed.function, submitit.helpers.Checkpointable
    )
    assert delayed.function.request == request and delayed.args == (spec,) and delayed.kwargs == {}


@pytest.fixture
def fake_srun(tmp_path, monkeypatch):
    """An `srun` on PATH, so submitit builds its Slurm executor; nothing is ever submitted."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_slurm_settings_become_the_sbatch_array(fake_srun, tmp_path):
    settings = [
        "executor.partition = 'gpu'",
        "executor.gpus_per_node = 1",
        "executor.cpus_per_task = 8",
        "executor.mem_gb = 64",
        "executor.timeout_min = 2880",
        "executor.array_parallelism = 12",
        "executor.timeout_requeues = 5",
        "executor.slurm_extra = {'qos': 'high', 'additional_parameters': {'mail-type': 'END'}}",
    ]
    request = RunRequest(
        experiment="paper", results_dir=tmp_path / "res", executor="slurm", executor_bindings=settings
    )
    executor = get_executor(request)
    assert isinstance(executor, SubmititExecutor)
    assert executor.folder == tmp_path / "res" / "paper" / ".submitit"
    backend = executor.backend()
    assert backend.cluster == "slurm" and backend._executor.max_num_timeout == 5
    assert backend.parameters == {
        "job_name": "bench-paper",
        "partition": "gpu",
        "gpus_per_node": 1,
        "cpus_per_task": 8,
        "mem": "64GB",
        "time": 2880,
        "ntasks_per_node": 1,
        "nodes": 1,
        "array_parallelism": 12,
        "qos": "high",
        "additional_parameters": {"mail-type": "END"},
    }
    sbatch = _make_sbatch_string(command="run", folder=executor.folder, map_count=36, **backend.parameters)
    for line in (
        "--array=0-35%12",
        "--partition=gpu",
        "--time=2880",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--mem=64GB",
        "--qos=high",
        "--mail-type=END",
        "--job-name=bench-paper",
    ):
        assert f"#SBATCH {line}\n" in sbatch, line


def test_one_cell_across_nodes_is_one_slurm_job_of_nodes_x_tasks(fake_srun, tmp_path):
    settings = ["executor.nodes = 2", "executor.tasks_per_node = 4", "executor.gpus_per_node = 4"]
    executor = get_executor(
        RunRequest(results_dir=tmp_path / "res", executor="slurm", executor_bindings=settings)
    )
    assert executor.config.processes == 8
    sbatch = _make_sbatch_string(
        command="run", folder=executor.folder, map_count=3, **executor.backend().parameters
    )
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--array=0-2%3"):
        assert f"#SBATCH {line}\n" in sbatch, line


def test_each_task_of_a_multi_node_cell_becomes_its_rank(monkeypatch):
    """Task 5 of 8 (second node, second task there) of array job 77: rank 5 of 8, local rank 1,
    the rendezvous on the job's first node, the same port on every task."""
    slurm = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "78",
        "SLURM_ARRAY_JOB_ID": "77",
        "SLURM_ARRAY_TASK_ID": "1",
        "SLURM_NTASKS": "8",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
    }
    exported = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")

    def fresh_task(rank: str) -> dict:
        for name in exported:  # set, then removed: monkeypatch restores what the export writes
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)
        for name, value in {**slurm, "SLURM_PROCID": rank}.items():
            monkeypatch.setenv(name, value)
        join_cell_processes()
        return {name: os.environ[name] for name in exported}

    env = fresh_task("5")
    assert env == {
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": env["MASTER_PORT"],
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "4",
    }
    first = fresh_task("0")
    assert first["RANK"] == "0" and first["MASTER_PORT"] == env["MASTER_PORT"]  # from the job id: one port


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_nodes_apply_to_slurm_only(tmp_path, executor):
    with pytest.raises(
        BenchError, match=f"executor.nodes=2 applies to executor=slurm .*executor={executor} runs"
    ):
        get_executor(
            RunRequest(results_dir=tmp_path, executor=executor, executor_bindings=["executor.nodes = 2"])
        )


@pytest.mark.parametrize(
    "binding,message",
    [
        ("executor.partiton = 'gpu'", "doesn't have a parameter named 'partiton'"),
        ("executor.timeout_min = 0", "executor.timeout_min must be a positive integer, got 0"),
        ("executor.mem_gb = 'lots'", "executor.mem_gb must be a positive number"),
        ("executor.tasks_per_node = 0", "executor.tasks_per_node must be a positive integer, got 0"),
        ("executor.slurm_extra = {'qoss': 'high'}", "unknown Slurm parameter(s) qoss (known: account,"),
    ],
)
def test_bad_executor_settings_are_one_line_errors(fake_srun, tmp_path, binding, message):
    request = RunRequest(results_dir=tmp_path, executor="slurm", executor_bindings=[binding])
    with pytest.raises(BenchError) as err:
        get_executor(request)
    assert message in str(err.value).splitlines()[0]
    assert list(tmp_path.iterdir()) == [tmp_path / "bin"]  # nothing written


def test_slurm_without_slurm_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BenchError, match=r"^executor=slurm: no Slurm here \(srun not found\)"):
        get_executor(RunRequest(results_dir=tmp_path, executor="slurm"))


@pytest.mark.slow
def test_unknown_executor_is_one_line_exit_2_and_writes_nothing(tmp_path, bench_cli):
    out = bench_cli("run", "executor=k8s", *SMALL, f"results_dir={tmp_path / 'res'}", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == "bench: error: unknown executor 'k8s' (known: inline, local, slurm)"
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_a_preempted_local_job_is_requeued_and_resumes_training(tmp_path, monkeypatch):
    """Slurm's preemption signal (USR2) to a running cell: submitit requeues the same cell, which
    resumes training from its newest checkpoint."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ov = parse_overrides(["methods=[fm]", *SMALL, "train.steps=300", "train.checkpoint_every=50"])
    request = RunRequest(results_dir=tmp_path, bindings=ov.bindings, axes=ov.axes, executor="local")
    spec = CellSpec("quick", "synthetic2d", "fm", 0)
    sjob = get_executor(request).backend().submit(CellJob(request), spec)
    checkpoints = spec.folder(tmp_path) / "checkpoints"
    while not any(checkpoints.glob("step_*/manifest.json")):
        assert not sjob.done(), "the job ended before its first checkpoint"
        time.sleep(0.05)
    controller = sjob.job_id  # a local job is a controller process running the cell in a child
    (task,) = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    os.kill(int(task), signal.SIGUSR2)
    outcome = sjob.result()
    assert outcome.status == "ok", outcome.reason
    assert outcome.record["train"]["resumed_from"] >= 50
    assert "synthetic2d/fm/seed0: preempted or timed out; requeued" in sjob.stderr()
