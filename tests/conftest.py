"""Shared fixtures: tests run against the installed bench, on the CPU, deterministically."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gin

torch.set_num_threads(1)
# cells one at a time in this process, in every `bench run` a test makes (tests/scale/test_pool.py runs
# them side by side): monkeypatches reach them, and two cores are not shared by worker start-ups
os.environ["BENCH_CELLS_AT_ONCE"] = "1"
# Shared test helpers (records_fixture.py, and helpers one test file imports from another) live beside
# the tests; with --import-mode=importlib no tests folder is on sys.path by itself. Only folders that
# hold modules join it (never tests/plugins, whose datasets/ subfolder must not shadow HF `datasets`).
_TESTS = Path(__file__).resolve().parent
# (tests/benchmarks stays off: its test_fid.py would shadow tests/plugins/evaluators/test_fid.py)
for _folder in sorted({p.parent for p in _TESTS.rglob("*.py") if "benchmarks" not in p.parts}, reverse=True):
    sys.path.insert(0, str(_folder))


def run_bench(*args: str, cwd: Path, env_extra: dict | None = None, timeout: int = 600):
    """Run the installed `bench` console script in a subprocess; returns CompletedProcess."""
    env = dict(os.environ)
    env.update(env_extra or {})
    exe = Path(sys.executable).with_name("bench")
    return subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def bench_cli():
    """The run_bench helper, as a fixture."""
    return run_bench


@pytest.fixture(autouse=True)
def clean_gin():
    """Every test starts and ends with no gin bindings and an unlocked config.

    bench parses (and locks) gin's one global config whenever it builds a cell, so a test that ran
    the CLI in-process or built a cell would otherwise leave its bindings, or a locked config, to the
    next test. Registered configurables stay (they are code, not configuration).
    """
    gin.clear_config()
    yield
    gin.clear_config()


def pytest_collection_modifyitems(items):
    """A test that shares a module- or session-scoped fixture with a `slow` test is slow too: the fast
    subset (`-m "not slow"`) would otherwise still pay for the expensive fixture (a shared run)."""

    def ours(fixturedef) -> bool:
        # pytest's own session fixtures (tmp_path_factory, worker_id, ...) cost nothing and are shared by
        # every test: counting them would mark every test of a file with one slow test as slow
        module = getattr(fixturedef.func, "__module__", "") or ""
        return not module.startswith(("_pytest", "pytest", "xdist"))

    def shared(item) -> set:
        defs = item._fixtureinfo.name2fixturedefs
        return {
            (item.module.__name__, n)
            for n in item.fixturenames
            if n in defs
            and defs[n][-1].scope in ("module", "session")
            and ours(defs[n][-1])
            and n not in ("bench_cli",)
        }

    expensive = set().union(*(shared(i) for i in items if i.get_closest_marker("slow")), set())
    for item in items:
        if not item.get_closest_marker("slow") and shared(item) & expensive:
            item.add_marker(pytest.mark.slow)
