"""Evaluation on every rank: `spread` shares independent tasks among the ranks, waits that outlast the
collective timeout go through the store, failures on any rank reach every rank, and the downstream
evaluator's classifiers shared among two processes give the one-process results bit for bit."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.runtime.distributed import shares

TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}


def _launch(script: str, tmp_path: Path, processes: int, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "script.py"
    path.write_text(script)
    launch = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(processes)] if processes > 1 \
        else [sys.executable]
    res = subprocess.run([*launch, str(path), *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_shares_give_each_task_once_costliest_first_to_the_least_loaded_rank():
    assert shares([1, 1, 1, 1, 1], 2) == [[0, 2, 4], [1, 3]]
    assert shares([1, 5, 1, 1], 2) == [[1], [0, 2, 3]]  # the costly task alone on a rank
    assert shares([2, 2], 4) == [[0], [1], [], []]
    assert shares([], 3) == [[], [], []]
    parts = shares([3.0, 1.0, 2.0, 2.0, 1.0, 4.0, 0.5], 3)
    assert sorted(i for part in parts for i in part) == list(range(7))
    loads = [sum([3.0, 1.0, 2.0, 2.0, 1.0, 4.0, 0.5][i] for i in part) for part in parts]
    assert max(loads) - min(loads) <= 4.0  # never more apart than the costliest task


HELPERS = textwrap.dedent('''
    import json, sys, time
    from datetime import timedelta
    import torch.distributed as dist
    from torch.distributed.distributed_c10d import _set_pg_timeout
    from bench.runtime import distributed
    from bench.errors import BenchError

    out = sys.argv[1]
    rank, seen = distributed.rank(), {}
    distributed.world()  # starts the process group
    _set_pg_timeout(timedelta(seconds=2))  # any collective that waited for the sleeps below would fail
    # rank 0 works 4 s while the other waits: polling the store, then a collective that finds it there
    seen["on_main"] = distributed.on_main(lambda: time.sleep(4) or 7)
    seen["first"] = distributed.main_first(lambda: time.sleep(4 * (rank == 0)) or rank)
    # five tasks: rank 0 runs 0, 2, 4 (one of them slow), rank 1 runs 1, 3
    slow = lambda t: time.sleep(4 if t == 2 else 0) or {"square": t * t, "rank": distributed.rank()}
    seen["spread"] = distributed.spread(range(5), slow)
    seen["together"] = distributed.together(lambda: time.sleep(4 * (rank == 1)) or rank)

    def fail_on(task, error):
        if task == 3:  # run by rank 1
            raise error
        return task

    for name, error in (("failed", RuntimeError("boom 3")), ("input", BenchError("bad input 3"))):
        try:
            distributed.spread(range(5), lambda t: fail_on(t, error))
        except Exception as exc:
            seen[name] = f"{type(exc).__name__}: {exc}"

    def fail_on_rank_1():
        if distributed.rank() == 1:
            raise ValueError("rank 1 only")
        return "fine"

    try:
        distributed.together(fail_on_rank_1)
    except Exception as exc:
        seen["together_failed"] = f"{type(exc).__name__}: {exc}"
    seen["after"] = distributed.on_main(lambda: "still in step")  # every rank counted the same rounds
    distributed.finish()
    json.dump(seen, open(f"{out}/rank{rank}.json", "w"))
''')


@pytest.mark.slow
def test_ranks_wait_for_long_work_without_a_collective_and_share_failures(tmp_path):
    _launch(HELPERS, tmp_path, 2, str(tmp_path))
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["on_main"] == r1["on_main"] == 7
    assert (r0["first"], r1["first"]) == (0, 1)
    expected = [{"square": t * t, "rank": t % 2} for t in range(5)]
    assert r0["spread"] == r1["spread"] == expected  # every result on every rank, in task order
    assert (r0["together"], r1["together"]) == (0, 1)
    assert r1["failed"] == "RuntimeError: boom 3" and r0["failed"] == "CellFailed: on rank 1: RuntimeError: boom 3"
    assert r0["input"] == r1["input"] == "BenchError: bad input 3"
    assert r1["together_failed"] == "ValueError: rank 1 only"
    assert r0["together_failed"] == "CellFailed: on rank 1: ValueError: rank 1 only"
    assert r0["after"] == r1["after"] == "still in step"


DOWNSTREAM = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    import gin, torch
    from bench import registry
    from bench.cell import CellContext
    from bench.dataset import Split
    from bench.evaluators.downstream import Downstream
    from bench.runtime import distributed

    out = Path(sys.argv[1])
    registry.remedies.load_all()
    ds = registry.datasets.get("digits_lt")(n_test_per_class=5, n_max=40)
    train, test = ds.load("train"), ds.load("test")
    tail = train.subset(train.y >= 5)
    noise = 0.1 * torch.randn(tail.x.shape, generator=torch.Generator().manual_seed(0))
    synthetic = Split((tail.x + noise).clamp(0, 1), tail.y)
    fast = dict(n_seeds=2, max_epochs=2, patience=1, batch_size=32, lr=1e-2)
    shared = (out / "shared", "k")
    metrics, seconds = {}, {}
    # the first cell stores the no-aug classifiers; the second adds remedies and cRT from the stored ones
    for name, remedies, with_aug in (("first", [], []), ("second", ["reweight", "crt"], ["crt", "reweight"])):
        ctx = CellContext(ds, train, test, synthetic, out / name, 0, shared=shared)
        t0 = time.perf_counter()
        metrics[name] = Downstream(remedies=remedies, with_augmentation=with_aug, **fast).evaluate(ctx)
        seconds[name] = time.perf_counter() - t0
    distributed.finish()
    json.dump({"metrics": metrics, "seconds": seconds}, open(out / f"rank{distributed.rank()}.json", "w"))
''')


def _digest(folder: Path) -> dict:
    """Everything the evaluator wrote under `folder`: JSON as objects (`folder` itself named ROOT),
    weights as tensors."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = str(path.relative_to(folder))
        out[key] = load_file(path) if path.suffix == ".safetensors" else \
            json.loads(path.read_text().replace(str(folder), "ROOT")) if path.suffix == ".json" else path.read_bytes()
    return out


@pytest.mark.slow
def test_downstream_classifiers_shared_among_two_processes_give_the_one_process_results(tmp_path):
    runs = {}
    for processes in (1, 2):
        folder = tmp_path / f"p{processes}"
        folder.mkdir()
        _launch(DOWNSTREAM, folder, processes, str(folder))
        runs[processes] = folder
    one = json.loads((runs[1] / "rank0.json").read_text())
    two = [json.loads((runs[2] / f"rank{r}.json").read_text()) for r in (0, 1)]
    for cell in ("first", "second"):
        assert two[0]["metrics"][cell] == two[1]["metrics"][cell] == one["metrics"][cell]
    assert {"bacc/crt", "bacc/aug+crt", "bacc/aug+reweight", "bacc/reweight"} <= set(one["metrics"]["second"])
    files1, files2 = (_digest(runs[p]) for p in (1, 2))
    for files in (files1, files2):
        for key in ("rank0.json", "rank1.json"):
            files.pop(key, None)
    assert set(files1) == set(files2)
    assert not [k for k in files2 if "parts" in k or Path(k).name.startswith(".")]  # nothing left over
    assert {f"shared/no_aug/model_{i}.safetensors" for i in range(2)} <= set(files2)
    for key, value in files1.items():
        if key.endswith(".safetensors"):
            assert set(value) == set(files2[key]) and all(torch.equal(value[k], files2[key][k]) for k in value), key
        elif key.endswith("manifest.json"):
            assert {k: v for k, v in value.items() if k != "created"} == \
                {k: v for k, v in files2[key].items() if k != "created"}, key
        else:
            assert value == files2[key], key
    print(f"downstream seconds, 1 process: {one['seconds']}, 2 processes: {two[0]['seconds']}")
