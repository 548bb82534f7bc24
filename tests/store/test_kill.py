"""Kill test: `bench run` SIGKILLed at many moments and rerun ends exactly as an uninterrupted run.

Also checks the pieces it relies on: a killed stage leaves only a staging folder that is never
taken for a finished artifact and is removed by the next writer, and stale temporary files
never break a rerun.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.store.artifacts import MANIFEST, is_complete, remove_leftovers, stage_dir, write_json_atomic
from bench.store.lock import LOCK
from bench.store.records import read_record


@pytest.fixture(scope="module")
def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def leftover_name(target: str, kind: str, pid: int, host: str | None = None) -> str:
    """The name bench.store.artifacts gives a staging folder / temporary file / trash of `target`."""
    suffix = ".tmp" if kind == "tmp" else ""
    return f".{target}.{kind}-{pid}@{host or socket.gethostname()}~k1ll3d{suffix}"


def leftovers(root: Path) -> list[Path]:
    """Locks, staging folders, temporary files and trash anywhere under `root`."""
    return [
        p
        for p in root.rglob(".*")
        if p.name.startswith(LOCK) or any(k in p.name for k in (".staging-", ".tmp", ".trash-"))
    ]


# -- the pieces ---------------------------------------------------------------------------------
WRITER = """
import sys, time
from bench.store.artifacts import stage_dir
with stage_dir(sys.argv[1], "h") as tmp:
    (tmp / "latents.npy").write_bytes(b"half of the data")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_killed_stage_is_never_complete_and_its_staging_is_removed(tmp_path):
    target = tmp_path / "latents"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    staging = [p for p in tmp_path.iterdir() if ".staging-" in p.name]
    assert len(staging) == 1 and f"-{proc.pid}@" in staging[0].name
    assert not target.exists() and not is_complete(target, "h")

    with stage_dir(target, "h") as tmp:  # the rerun of the stage
        (tmp / "latents.npy").write_bytes(b"all of the data")
    assert is_complete(target, "h") and (target / "latents.npy").read_bytes() == b"all of the data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latents"]


def test_only_leftovers_of_dead_writers_on_this_host_are_removed(tmp_path, dead_pid):
    dead = [
        leftover_name("samples", "staging", dead_pid),
        leftover_name("record.json", "tmp", dead_pid),
        leftover_name("step_00000010", "trash", dead_pid),
    ]
    kept = [
        leftover_name("samples", "staging", os.getpid()),  # a live run's work in progress
        leftover_name("samples", "staging", dead_pid, host="elsewhere"),  # unknown: other host
        ".record.json.abc.tmp",
        "record.json",
    ]  # not bench-tagged
    for name in dead + kept:
        if "staging" in name or "trash" in name:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text("{")
    sub = tmp_path / "checkpoints"
    sub.mkdir()
    (sub / leftover_name("step_00000020", "staging", dead_pid)).mkdir()

    assert sorted(p.name for p in remove_leftovers(tmp_path)) == sorted(dead)
    assert (sub / leftover_name("step_00000020", "staging", dead_pid)).exists()  # not recursive
    remove_leftovers(tmp_path, recursive=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["checkpoints"])
    assert list(sub.iterdir()) == []


def test_a_stale_temporary_file_never_breaks_a_rerun(tmp_path, dead_pid):
    write_json_atomic(tmp_path / "record.json", {"status": "ok", "metrics": {"swd/all": 0.5}})
    stale = tmp_path / leftover_name("record.json", "tmp", dead_pid)
    stale.write_text('{"status": "ok", "metr')  # killed while writing the next version
    assert read_record(tmp_path) == {"status": "ok", "metrics": {"swd/all": 0.5}}
    write_json_atomic(tmp_path / "record.json", {"status": "ok", "metrics": {"swd/all": 0.25}})
    assert read_record(tmp_path)["metrics"] == {"swd/all": 0.25}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_stage_finished_concurrently_keeps_the_first_copy(tmp_path):
    target = tmp_path / "latents"
    with stage_dir(target, "h") as tmp:
        (tmp / "data").write_text("ours")
        with stage_dir(target, "h") as other:  # another run finishes the same stage first
            (other / "data").write_text("theirs")
    assert is_complete(target, "h") and (target / "data").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latents"]
    with stage_dir(target, "h2") as tmp:  # a new config replaces the folder
        (tmp / "data").write_text("new")
    assert (target / "data").read_text() == "new" and sorted(os.listdir(target)) == ["data", MANIFEST]


# -- the whole `bench run` ----------------------------------------------------------------------
GRID = [
    "datasets=[synthetic2d]",
    "methods=[fm,cpd]",
    "seeds=[0]",
    "train.steps=60",
    "train.batch_size=128",
    "train.threads=1",
    "train.checkpoint_every=10",
    "train.log_every=15",
    "mlp.hidden=32",
    "mlp.depth=2",
    "sample.nfe=4",
    "synthetic2d.n_max=400",
    "synthetic2d.n_test_per_class=50",
]
CELLS = ["synthetic2d/fm/seed0", "synthetic2d/cpd/seed0"]
# Each kill waits for a new file matching its pattern (relative to the results folder), so the
# kills land at different stages whatever the machine's speed; a run that ends before its
# pattern appears has finished the grid.
MOMENTS = [
    "cache/latents/*/" + MANIFEST,  # training latents encoded, the first cell locked
    "quick/synthetic2d/fm/seed0/checkpoints/step_*",  # fm in training
    "quick/synthetic2d/fm/seed0/samples/" + MANIFEST,  # fm sampled, not evaluated
    "quick/synthetic2d/fm/seed0/record.json",  # fm finished, cpd starting
    "quick/synthetic2d/cpd/seed0/checkpoints/step_*",  # cpd in training
    "quick/synthetic2d/cpd/seed0/**/.*staging-*",  # cpd writing a stage
]
VOLATILE = ("timings_s", "created", "host", "git_hash")  # legitimately differ between runs
VOLATILE_TRAIN = ("seconds", "resumed_from")


def start(res: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("bench")
    return subprocess.Popen(
        [str(exe), "run", *GRID, f"results_dir={res}"],
        cwd=res.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_at(res: Path, pattern: str) -> bool:
    """Run `bench run` and SIGKILL it once a new file matches `pattern`; False if it finished."""
    before = set(res.glob(pattern))
    proc = start(res)
    while proc.poll() is None:
        if set(res.glob(pattern)) - before:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            return True
        time.sleep(0.002)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    return False


def cell_records(res: Path) -> dict:
    """label -> (bytes, mtime) of every record written so far."""
    out = {}
    for label in CELLS:
        path = res / "quick" / label / "record.json"
        if path.exists():
            out[label] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


def comparable(record: dict) -> dict:
    """The record without what legitimately differs between two runs of the same cell."""
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    out["train"] = {k: v for k, v in record["train"].items() if k not in VOLATILE_TRAIN}
    return out


@pytest.mark.slow
def test_killed_and_rerun_grid_ends_as_the_uninterrupted_run(tmp_path, dead_pid):
    reference = tmp_path / "reference" / "res"
    reference.parent.mkdir()
    proc = start(reference)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()

    res = tmp_path / "killed" / "res"
    res.parent.mkdir()
    kills, finished = [], {}
    for pattern in MOMENTS:
        if not kill_at(res, pattern):
            break
        kills.append(pattern)
        for label, snapshot in cell_records(res).items():
            finished.setdefault(label, snapshot)  # first seen: must never change again
    assert len(kills) >= 5, kills

    # what a kill during a write would leave in a cell; the rerun removes it and is not confused
    cell = res / "quick" / CELLS[1]
    (cell / "checkpoints").mkdir(parents=True, exist_ok=True)
    (cell / leftover_name("record.json", "tmp", dead_pid)).write_text('{"status": "ok", "met')
    (cell / "checkpoints" / leftover_name("step_00000070", "staging", dead_pid)).mkdir()
    proc = start(res)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()

    for label, (data, mtime) in finished.items():
        path = res / "quick" / label / "record.json"
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime, label
    for label in CELLS:
        want = json.loads((reference / "quick" / label / "record.json").read_text())
        got = json.loads((res / "quick" / label / "record.json").read_text())
        assert got["metrics"] == want["metrics"], label  # exactly, not approximately
        assert got["train"]["loss_trace"] == want["train"]["loss_trace"], label
        assert comparable(got) == comparable(want), label
        assert not (res / "quick" / label / "failure.json").exists()
    assert not leftovers(res)
