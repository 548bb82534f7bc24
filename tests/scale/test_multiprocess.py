"""One cell on two processes: `torchrun -m bench run` and `executor.tasks_per_node=2` give the
records, weights and samples of one process, bit for bit (the downstream classifiers shared among
the ranks included), rank 0's failures (and any rank's in shared work) reach every rank, and a rank
waits for another's long work without a collective that could time out."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gin
from bench.errors import BenchError
from bench.pipeline.assemble import RunRequest
from bench.runtime.distributed import shares
from bench.scale.executors import get_executor

TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {"OMP_NUM_THREADS": "1"}
# cbfm draws randomness inside its loss, optprior fits a prior (rank 0 first, the other rank reads it)
GRID = [
    "methods=[cbfm,optprior]",
    "datasets=[synthetic2d]",
    "seeds=[0]",
    "train.steps=40",
    "train.batch_size=64",
    "train.micro_batches=2",
    "synthetic2d.n_max=400",
    "synthetic2d.n_test_per_class=40",
    "optprior.steps=100",  # the source optimisation's default 2,500 steps: 6 s of each launch
]
METHODS = ("cbfm", "optprior")
# an image cell whose downstream classifiers (2 seeds x no-aug, reweight, cRT, aug, aug+reweight,
# aug+cRT) are shared among the ranks; cond_accuracy runs on rank 0 alone
IMAGE_GRID = [
    "methods=[fm]",
    "datasets=[digits_lt]",
    "seeds=[0]",
    "train.steps=4",
    "train.batch_size=64",
    "train.micro_batches=2",
    "pipeline.evaluators=['downstream','cond_accuracy']",
    "digits_lt.n_test_per_class=5",
    "digits_lt.n_max=40",
    "sample.nfe=2",
    "downstream.n_seeds=2",
    "downstream.max_epochs=2",
    "downstream.patience=1",
    "downstream.remedies=['reweight','crt']",
    "downstream.with_augmentation=['reweight','crt']",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bench_cli):
    """The grid on one process, on two (torchrun) and as local jobs of two tasks each."""
    root = tmp_path_factory.mktemp("mp")
    launch = {
        "one": [],
        "torchrun": ["torchrun"],
        "tasks": ["executor=local", "executor.tasks_per_node=2", "executor.timeout_min=30"],
    }
    out = {}
    for name, extra in launch.items():
        args = [*GRID, f"results_dir={root / name}"]
        if extra == ["torchrun"]:
            out[name] = subprocess.run(
                [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "bench", "run", *args],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=600,
                env={"PATH": "/usr/bin:/bin", **ENV},
            )
        else:
            out[name] = bench_cli("run", *args, *extra, cwd=root, env_extra=ENV)
        assert out[name].returncode == 0, out[name].stderr[-3000:]
    return root, out


def cell(root: Path, run: str, method: str) -> Path:
    return root / run / "quick" / "synthetic2d" / method / "seed0"


def _same_tensors(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    return set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
@pytest.mark.parametrize("run", ["torchrun", "tasks"])
def test_two_processes_give_the_one_process_records_bit_for_bit(runs, run):
    root, _ = runs
    for method in METHODS:
        one, two = cell(root, "one", method), cell(root, run, method)
        rec1, rec2 = (json.loads((c / "record.json").read_text()) for c in (one, two))
        assert rec2["metrics"] == rec1["metrics"] and rec2["config_hash"] == rec1["config_hash"]
        assert rec2["train"]["loss_trace"] == rec1["train"]["loss_trace"]
        assert (rec1["train"]["processes"], rec2["train"]["processes"]) == (1, 2)
        assert _same_tensors(one / "backbone" / "model.safetensors", two / "backbone" / "model.safetensors")
        assert _same_tensors(one / "samples" / "samples.safetensors", two / "samples" / "samples.safetensors")
        # rank 0 wrote every artifact once: nothing staged, locked or left half-done
        assert not [p for p in two.rglob("*") if p.name.startswith(".") or "staging" in p.name]


@pytest.fixture(scope="module")
def image_runs(tmp_path_factory, bench_cli):
    """The image cell on one process and on two (torchrun)."""
    root = tmp_path_factory.mktemp("mp_image")
    one = bench_cli("run", *IMAGE_GRID, f"results_dir={root / 'one'}", cwd=root, env_extra=ENV)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            str(TORCHRUN),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "bench",
            "run",
            *IMAGE_GRID,
            f"results_dir={root / 'two'}",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", **ENV},
    )
    assert two.returncode == 0, two.stderr[-3000:]
    return root


@pytest.mark.slow
def test_downstream_classifiers_shared_by_two_processes_give_the_one_process_record(image_runs):
    one, two = (image_runs / run / "quick" / "digits_lt" / "fm" / "seed0" for run in ("one", "two"))
    rec1, rec2 = (json.loads((c / "record.json").read_text()) for c in (one, two))
    assert (rec1["train"]["processes"], rec2["train"]["processes"]) == (1, 2)
    assert {"bacc/crt", "bacc/aug+crt", "bacc/aug+reweight", "cond_acc/tail"} <= set(rec1["metrics"])
    assert rec2["metrics"] == rec1["metrics"] and rec2["details"] == rec1["details"]
    runs1, runs2 = (json.loads((c / "downstream.json").read_text())["runs"] for c in (one, two))
    assert runs2 == runs1  # every classifier's scores and training history
    # the no-aug weights the store keeps, seed 1's written by rank 1: those of one process
    shared1, shared2 = (image_runs / run / "cache" / "downstream" for run in ("one", "two"))
    weights = sorted(p.relative_to(shared1) for p in shared1.rglob("model_*.safetensors"))
    assert len(weights) == 2 and weights == sorted(
        p.relative_to(shared2) for p in shared2.rglob("model_*.safetensors")
    )
    assert all(_same_tensors(shared1 / w, shared2 / w) for w in weights)
    assert not [p for p in two.rglob("*") if p.name.startswith(".") or "parts" in p.name]  # nothing left over


@pytest.mark.slow
def test_only_rank_0_reports(runs):
    _, out = runs
    assert out["torchrun"].stdout.count("records under") == 1
    # one summary: optprior's row (and its source-only line) printed once, not once per rank
    assert len(re.findall(r"^\| optprior +\|", out["torchrun"].stdout, flags=re.M)) == 1


HELPERS = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from bench.runtime import distributed
    from bench.errors import BenchError

    out = Path(sys.argv[1])
    rank, seen = distributed.rank(), {}
    seen["world"] = distributed.world()
    seen["agree"] = distributed.agree(f"from rank {rank}")
    marker = out / "made-by-rank-0"
    # main_first: rank 0 writes the file, the other rank runs after it and finds it
    seen["first"] = distributed.main_first(lambda: marker.exists() or not marker.write_text("x"))
    seen["on_main"] = distributed.on_main(lambda: rank * 10 + 7)
    for name, error in (("failed", RuntimeError("boom")), ("input", BenchError("bad input"))):
        def fail():
            raise error
        try:
            distributed.on_main(fail)
        except Exception as exc:
            seen[name] = f"{type(exc).__name__}: {exc}"
    # from here on, a collective that waited for the 3 s of work below would time out
    from datetime import timedelta
    from torch.distributed.distributed_c10d import _set_pg_timeout
    _set_pg_timeout(timedelta(seconds=2))
    seen["slow_main"] = distributed.on_main(lambda: time.sleep(3) or 8)
    seen["slow_first"] = distributed.main_first(lambda: time.sleep(3 * (rank == 0)) or rank)
    # five tasks: rank 0 runs 0, 2 (slow) and 4, rank 1 runs 1 and 3, then waits for rank 0
    work = lambda t: time.sleep(3 if t == 2 else 0) or {"square": t * t, "rank": distributed.rank()}
    seen["spread"] = distributed.spread(range(5), work)
    seen["together"] = distributed.together(lambda: time.sleep(3 * (rank == 1)) or rank)
    for name, error in (("spread_failed", RuntimeError("boom 3")), ("spread_input", BenchError("bad input 3"))):
        def fail_on_3(task):
            if task == 3:  # rank 1's task
                raise error
            return task
        try:
            distributed.spread(range(5), fail_on_3)
        except Exception as exc:
            seen[name] = f"{type(exc).__name__}: {exc}"

    def fail_on_rank_1():
        if rank == 1:
            raise ValueError("rank 1 only")
    try:
        distributed.together(fail_on_rank_1)
    except Exception as exc:
        seen["together_failed"] = f"{type(exc).__name__}: {exc}"
    seen["after"] = distributed.on_main(lambda: "in step")  # every rank counted the same rendezvous
    distributed.finish()
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    distributed.leave(0)  # as bench's launched ranks leave: no teardown for gloo's threads to abort
""")


@pytest.mark.slow
def test_rank_0_results_and_failures_reach_every_rank_and_long_waits_are_no_collective(tmp_path):
    script = tmp_path / "helpers.py"
    script.write_text(HELPERS)
    res = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", **ENV},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["agree"] == r1["agree"] == "from rank 0"
    assert (r0["first"], r1["first"]) == (False, True)  # rank 0 made it; rank 1 found it made
    assert r0["on_main"] == r1["on_main"] == 7
    assert (
        r0["failed"] == "RuntimeError: boom" and r1["failed"] == "CellFailed: on rank 0: RuntimeError: boom"
    )
    assert r0["input"] == r1["input"] == "BenchError: bad input"
    # rank 0's 3 s of work outlast the 2 s collective timeout: the other rank waits on the store
    assert r0["slow_main"] == r1["slow_main"] == 8 and (r0["slow_first"], r1["slow_first"]) == (0, 1)
    expected = [{"square": t * t, "rank": t % 2} for t in range(5)]
    assert r0["spread"] == r1["spread"] == expected  # every result on every rank, in task order
    assert (r0["together"], r1["together"]) == (0, 1)
    assert r1["spread_failed"] == "RuntimeError: boom 3"
    assert r0["spread_failed"] == "CellFailed: on rank 1: RuntimeError: boom 3"
    assert r0["spread_input"] == r1["spread_input"] == "BenchError: bad input 3"
    assert r1["together_failed"] == "ValueError: rank 1 only"
    assert r0["together_failed"] == "CellFailed: on rank 1: ValueError: rank 1 only"
    assert r0["after"] == r1["after"] == "in step"


def test_shares_give_each_task_once_costliest_first_to_the_least_loaded_rank():
    assert shares([1, 1, 1, 1, 1], 2) == [[0, 2, 4], [1, 3]]
    assert shares([1, 5, 1, 1], 2) == [[1], [0, 2, 3]]  # the costly task alone on its rank
    assert shares([2, 2], 4) == [[0], [1], [], []]
    assert shares([], 3) == [[], [], []]
    costs = [3.0, 1.0, 2.0, 2.0, 1.0, 4.0, 0.5]
    parts = shares(costs, 3)
    assert sorted(i for part in parts for i in part) == list(range(7))
    loads = [sum(costs[i] for i in part) for part in parts]
    assert max(loads) - min(loads) <= max(costs)  # never further apart than the costliest task


def test_one_process_helpers_are_plain_calls():
    from bench.runtime import distributed

    assert (distributed.world(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.agree(3) == 3 and distributed.on_main(lambda: 4) == 4
    assert distributed.main_first(lambda: 5) == 5


def test_processes_per_cell_need_a_job_executor_or_a_launcher(tmp_path, monkeypatch):
    request = RunRequest(results_dir=tmp_path, executor_bindings=["executor.tasks_per_node = 2"])
    with pytest.raises(
        BenchError,
        match=r"^executor.tasks_per_node applies to executor=local or slurm; "
        r"to run inline on N processes use: torchrun --nproc_per_node N",
    ):
        get_executor(request)
    gin.clear_config()
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun
    with pytest.raises(BenchError, match=r"^executor=local submits jobs: start bench as one process"):
        get_executor(RunRequest(results_dir=tmp_path, executor="local"))
    assert list(tmp_path.iterdir()) == []
