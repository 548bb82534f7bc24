"""Thread defaults that hold up on a busy machine, and the `busy` benchmark that checks them."""

from __future__ import annotations

import multiprocessing
import os
import subprocess

from bench.perf import busy
from bench.perf.case import python_command
from bench.perf.markdown import markdown
from bench.runtime import threads


def wait_policy_in_child(env_policy=None, keep=False) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "BENCH_KEEP_OMP")}
    if env_policy:
        env["OMP_WAIT_POLICY"] = env_policy
    if keep:
        env["BENCH_KEEP_OMP"] = "1"
    code = "import os, bench; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    return subprocess.run(
        [*python_command(), "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_openmp_waits_passively_on_a_busy_machine_only():
    assert threads.wait_policy(load=1.0, cores=2) == "PASSIVE"
    assert threads.wait_policy(load=6.5, cores=2) == "PASSIVE"
    assert threads.wait_policy(load=0.9, cores=2) is None  # idle: spinning is faster
    assert threads.wait_policy(load=3.0, cores=16) is None


def test_importing_bench_sets_the_policy_the_load_asks_for_unless_the_user_chose():
    assert wait_policy_in_child("ACTIVE") == "ACTIVE"
    assert wait_policy_in_child(keep=True) == "unset"
    chosen = wait_policy_in_child()
    assert chosen in ("PASSIVE", "unset")
    assert (
        chosen == (threads.wait_policy(os.getloadavg()[0], threads.usable_cores()) or "unset")
        or abs(os.getloadavg()[0] - threads.BUSY_SHARE * threads.usable_cores()) < 0.5
    )  # the load moved meanwhile


def test_image_reading_threads_never_exceed_the_usable_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    assert threads.read_threads() == 2
    monkeypatch.setattr(threads, "usable_cores", lambda: 64)
    assert threads.read_threads() == threads.MAX_READ_THREADS


def test_busy_child_times_a_training_step():
    # 18 steps apart: two steps apart, machine noise could make the difference negative (seen once)
    seconds = busy.child(threads=1, k1=2, k2=20, rows=256)
    assert 0 < seconds < 5


def test_load_starts_busy_processes_and_stops_them():
    with busy.load(2):
        alive = [p for p in multiprocessing.active_children() if p.is_alive()]
        assert len(alive) >= 2
    assert not any(p.is_alive() for p in multiprocessing.active_children())


def test_busy_summary_shows_every_setting():
    table = {
        load: {p: {"1": 0.01, "2": 0.02, "0": 0.03} for p in busy.POLICIES} for load in ("idle", "loaded")
    }
    text = markdown(
        {
            "scale": "smoke",
            "started": "now",
            "targets": {},
            "errors": {},
            "files": [],
            "machine": {"host": "h", "cores": 2, "cpu": "x", "torch": "t", "torch_threads": 2, "cuda": None},
            "busy": table,
            "details": {"busy": {"bench_defaults": threads.defaults()}},
        }
    )
    assert "| loaded | PASSIVE | 0.010 | 0.020 | 0.030 |" in text and "default threads" in text
