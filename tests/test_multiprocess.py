"""One cell on two processes: `torchrun -m bench run` and `executor.tasks_per_node=2` give the
records, weights and samples of one process, bit for bit, and rank 0's failures reach every rank."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import gin
import pytest
import torch
from safetensors.torch import load_file

from bench.pipeline.cells import RunRequest
from bench.errors import BenchError
from bench.scale.executors import get_executor

TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {"OMP_NUM_THREADS": "1"}
# cbfm draws randomness inside its loss, optprior fits a prior (rank 0 first, the other rank reads it)
GRID = ["methods=[cbfm,optprior]", "datasets=[synthetic2d]", "seeds=[0]", "train.steps=40",
        "train.batch_size=64", "train.micro_batches=2", "synthetic2d.n_max=400",
        "synthetic2d.n_test_per_class=40"]
METHODS = ("cbfm", "optprior")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bench_cli):
    """The grid on one process, on two (torchrun) and as local jobs of two tasks each."""
    root = tmp_path_factory.mktemp("mp")
    launch = {"one": [], "torchrun": ["torchrun"],
              "tasks": ["executor=local", "executor.tasks_per_node=2", "executor.timeout_min=30"]}
    out = {}
    for name, extra in launch.items():
        args = [*GRID, f"results_dir={root / name}"]
        if extra == ["torchrun"]:
            out[name] = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "bench",
                                        "run", *args], cwd=root, capture_output=True, text=True, timeout=600,
                                       env={"PATH": "/usr/bin:/bin", **ENV})
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
        assert _same_tensors(one / "backbone" / "model.safetensors",
                             two / "backbone" / "model.safetensors")
        assert _same_tensors(one / "samples" / "samples.safetensors", two / "samples" / "samples.safetensors")
        # rank 0 wrote every artifact once: nothing staged, locked or left half-done
        assert not [p for p in two.rglob("*") if p.name.startswith(".") or "staging" in p.name]


@pytest.mark.slow
def test_only_rank_0_reports(runs):
    _, out = runs
    assert out["torchrun"].stdout.count("records under") == 1
    # one summary: optprior's row (and its source-only line) printed once, not once per rank
    assert len(re.findall(r"^\| optprior +\|", out["torchrun"].stdout, flags=re.M)) == 1


HELPERS = textwrap.dedent('''
    import json, sys
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
    distributed.finish()
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
''')


@pytest.mark.slow
def test_rank_0_results_and_failures_reach_every_rank(tmp_path):
    script = tmp_path / "helpers.py"
    script.write_text(HELPERS)
    res = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", **ENV})
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["agree"] == r1["agree"] == "from rank 0"
    assert (r0["first"], r1["first"]) == (False, True)  # rank 0 made it; rank 1 found it made
    assert r0["on_main"] == r1["on_main"] == 7
    assert r0["failed"] == "RuntimeError: boom" and r1["failed"] == "CellFailed: on rank 0: RuntimeError: boom"
    assert r0["input"] == r1["input"] == "BenchError: bad input"


def test_one_process_helpers_are_plain_calls():
    from bench.runtime import distributed

    assert (distributed.world(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.agree(3) == 3 and distributed.on_main(lambda: 4) == 4
    assert distributed.main_first(lambda: 5) == 5


@pytest.fixture
def fresh_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_processes_per_cell_need_a_job_executor_or_a_launcher(tmp_path, monkeypatch, fresh_gin):
    request = RunRequest(results_dir=tmp_path, executor_bindings=["executor.tasks_per_node = 2"])
    with pytest.raises(BenchError, match=r"^executor.tasks_per_node applies to executor=local or slurm; "
                                         r"to run inline on N processes use: torchrun --nproc_per_node N"):
        get_executor(request)
    gin.clear_config()
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun
    with pytest.raises(BenchError, match=r"^executor=local submits jobs: start bench as one process"):
        get_executor(RunRequest(results_dir=tmp_path, executor="local"))
    assert list(tmp_path.iterdir()) == []
