"""Shared fixtures: tests run against the installed bench, on the CPU, deterministically."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
# cells one at a time in this process, in every `bench run` a test makes (tests/scale/test_pool.py runs
# them side by side): monkeypatches reach them, and two cores are not shared by worker start-ups
os.environ["BENCH_CELLS_AT_ONCE"] = "1"
# Shared test helpers (records_fixture.py, and helpers one test file imports from another) live beside
# the tests; with --import-mode=importlib no tests folder is on sys.path by itself. Only folders that
# hold modules join it (never tests/plugins, whose datasets/ subfolder must not shadow HF `datasets`).
_TESTS = Path(__file__).resolve().parent
for _folder in sorted({p.parent for p in _TESTS.rglob("*.py")}, reverse=True):
    sys.path.insert(0, str(_folder))


def run_bench(*args: str, cwd: Path, env_extra: dict | None = None, timeout: int = 600):
    """Run the installed `bench` console script in a subprocess; returns CompletedProcess."""
    env = dict(os.environ)
    env.update(env_extra or {})
    exe = Path(sys.executable).with_name("bench")
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def bench_cli():
    """The run_bench helper, as a fixture."""
    return run_bench
