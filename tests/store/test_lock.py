"""Cell locks: one run per cell, stale locks taken over, concurrent `bench run`s share a grid."""

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.pipeline.assemble import CellSpec, RunRequest
from bench.pipeline.execute import execute_cell
from bench.store.lock import LOCK, CellLock, CellLocked, Owner, process_alive


@pytest.fixture
def live_pid():
    """The pid of another live process on this host."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def plant_lock(
    folder: Path, pid: int, host: str | None = None, age_s: float = 0.0, job: str | None = None
) -> Path:
    """A lock file as another process would have written it, `age_s` seconds old."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    path.write_text(
        json.dumps(
            {
                "pid": pid,
                "host": host or socket.gethostname(),
                "job": job,
                "started": "2025-01-01T00:00:00+0000",
                "token": "theirs",
            }
        )
    )
    if age_s:
        old = time.time() - age_s
        os.utime(path, (old, old))
    return path


def test_lock_holds_the_owner_and_is_removed_on_release(tmp_path):
    with CellLock.acquire(tmp_path) as lock:
        content = json.loads((tmp_path / LOCK).read_text())
        assert content["pid"] == os.getpid() and content["host"] == socket.gethostname()
        assert content["started"] and content["token"] == lock.content["token"]
    assert not (tmp_path / LOCK).exists()


def test_a_held_lock_cannot_be_acquired_again(tmp_path, live_pid):
    plant_lock(tmp_path, live_pid)
    with pytest.raises(
        CellLocked,
        match=f"another bench run \\(pid {live_pid} on host {socket.gethostname()}\\) is running this cell",
    ):
        CellLock.acquire(tmp_path)
    assert json.loads((tmp_path / LOCK).read_text())["token"] == "theirs"  # left alone


def test_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, dead_pid, caplog):
    plant_lock(tmp_path, dead_pid, age_s=5)
    with caplog.at_level(logging.WARNING, logger="bench.store.lock"):
        with CellLock.acquire(tmp_path):
            assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert f"stale lock of pid {dead_pid}" in caplog.text and "the process is gone" in caplog.text
    assert not list(tmp_path.iterdir())  # no lock, no takeover guard left


def test_reused_pid_does_not_keep_a_lock_alive(tmp_path):
    if Owner.me().start_tick is None:
        pytest.skip("needs /proc to tell a reused pid apart")
    path = plant_lock(tmp_path, os.getpid())  # our pid, but another process's start time
    content = json.loads(path.read_text())
    path.write_text(json.dumps({**content, "start_tick": Owner.me().start_tick + 1}))
    with CellLock.acquire(tmp_path) as lock:
        assert lock.owned()


def test_lock_of_another_host_is_stale_only_after_the_timeout(tmp_path):
    plant_lock(tmp_path, 1, host="elsewhere.example", age_s=120)
    with pytest.raises(CellLocked, match="on host elsewhere.example"):
        CellLock.acquire(tmp_path, stale_after=600)
    with CellLock.acquire(tmp_path, stale_after=60):
        assert json.loads((tmp_path / LOCK).read_text())["host"] == socket.gethostname()


def test_a_requeued_slurm_job_takes_over_its_own_lock_at_once(tmp_path, monkeypatch, caplog):
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    plant_lock(tmp_path, 1, host="node7", job="991_3")
    monkeypatch.setenv("SLURM_JOB_ID", "995")  # another task of the array: not ours
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "991")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    with pytest.raises(CellLocked, match="on host node7"):
        CellLock.acquire(tmp_path)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")  # the same task, requeued onto this node
    with CellLock.acquire(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["job"] == "991_3"
    assert "an earlier run of this Slurm job (991_3), requeued" in caplog.text


def test_timeout_comes_from_the_environment(tmp_path, monkeypatch):
    plant_lock(tmp_path, 1, host="elsewhere.example", age_s=120)
    monkeypatch.setenv("BENCH_LOCK_STALE_S", "600")
    with pytest.raises(CellLocked):
        CellLock.acquire(tmp_path)
    monkeypatch.setenv("BENCH_LOCK_STALE_S", "60")
    CellLock.acquire(tmp_path).release()


def test_heartbeat_keeps_a_long_held_lock_fresh(tmp_path):
    with CellLock.acquire(tmp_path, stale_after=2) as lock:  # refreshed every 0.5 s
        old = time.time() - 1000
        os.utime(lock.path, (old, old))
        deadline = time.time() + 30
        while lock.path.stat().st_mtime < old + 500 and time.time() < deadline:
            time.sleep(0.05)
        assert time.time() - lock.path.stat().st_mtime < 60


def test_release_leaves_a_lock_that_another_run_took_over(tmp_path):
    lock = CellLock.acquire(tmp_path)
    plant_lock(tmp_path, 12345)  # e.g. our lock was judged stale and replaced
    lock.release()
    assert json.loads((tmp_path / LOCK).read_text())["token"] == "theirs"


def test_process_liveness(dead_pid, live_pid):
    assert process_alive(os.getpid()) and process_alive(live_pid)
    assert not process_alive(dead_pid)


def test_execute_cell_skips_a_locked_cell_without_building_it(tmp_path, live_pid, caplog):
    spec = CellSpec("quick", "synthetic2d", "no_such_method", 0)  # building it would fail
    plant_lock(spec.folder(tmp_path), live_pid)
    with caplog.at_level(logging.WARNING, logger="bench.pipeline.execute"):
        outcome = execute_cell(spec, RunRequest(results_dir=tmp_path))
    assert outcome.status == "locked" and outcome.record is None
    line = (
        f"synthetic2d/no_such_method/seed0: another bench run (pid {live_pid} on host "
        f"{socket.gethostname()}) is running this cell; skipped"
    )
    assert line in caplog.text
    assert sorted(p.name for p in spec.folder(tmp_path).iterdir()) == [LOCK]


# -- two concurrent `bench run`s on one results folder ------------------------------------------
GRID = [
    "datasets=[synthetic2d]",
    "methods=[fm,cpd]",
    "seeds=[0,1]",
    "train.steps=300",
    "train.batch_size=128",
    "train.threads=1",
    "train.checkpoint_every=100",
    "mlp.hidden=32",
    "mlp.depth=2",
    "sample.nfe=4",
    "synthetic2d.n_max=400",
    "synthetic2d.n_test_per_class=50",
]
LABELS = [f"synthetic2d/{m}/seed{s}" for m in ("fm", "cpd") for s in (0, 1)]


def leftovers(root: Path) -> list[Path]:
    """Locks, staging folders, temporary files and trash anywhere under `root`."""
    return [
        p
        for p in root.rglob(".*")
        if p.name.startswith(LOCK) or any(k in p.name for k in (".staging-", ".tmp", ".trash-"))
    ]


@pytest.mark.slow
def test_concurrent_runs_share_the_grid_and_run_each_cell_once(tmp_path):
    res = tmp_path / "res"
    exe = Path(sys.executable).with_name("bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [str(exe), "run", *GRID, f"results_dir={res}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outs):
        assert proc.returncode == 0, err
    for label in LABELS:
        # a run either ran the cell, or skipped it (held by the other run, or already recorded)
        ran = [
            err
            for _, err in outs
            if f"{label}: another bench run" not in err and f"{label}: record exists" not in err
        ]
        assert len(ran) == 1, (label, [err for _, err in outs])
        record = json.loads((res / "quick" / label / "record.json").read_text())
        assert record["status"] == "ok" and "train" in record["timings_s"]
        assert record["train"]["resumed_from"] is None  # trained once, from scratch
    assert not leftovers(res)


@pytest.mark.parametrize(
    "content",
    [b"\x00\xffgarbage", b"[1, 2]", b'"a string"', b'{"host": "h"}', b'{"pid": "abc", "host": "h"}'],
)
def test_a_garbage_lock_is_taken_over_at_once(tmp_path, content, caplog):
    """No writer ever leaves a lock that is not a JSON object with its pid (locks are created
    with their content, by a hard link): such a file is garbage, not a run in progress."""
    (tmp_path / LOCK).write_bytes(content)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING), CellLock.acquire(tmp_path) as lock:
        assert lock.owned()
    assert time.monotonic() - start < 1.0
    assert "unreadable or malformed lock file" in caplog.text


@pytest.mark.slow
def test_an_empty_lock_waits_briefly_for_its_writer_then_is_taken_over(tmp_path):
    (tmp_path / LOCK).write_bytes(b"")
    start = time.monotonic()
    with CellLock.acquire(tmp_path) as lock:
        assert lock.owned()
    assert 1.5 < time.monotonic() - start < 5.0


def test_a_lock_is_never_visible_without_its_content(tmp_path):
    """The lock file appears with its JSON already in it, and no private file is left behind."""
    with CellLock.acquire(tmp_path) as lock:
        holder = json.loads((tmp_path / LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["token"] == lock.content["token"]
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK]
