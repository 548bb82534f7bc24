"""The command line run as `python -m bench` at the repository root."""

import pytest


@pytest.mark.slow
def test_python_m_bench_at_the_repository_root_reads_a_method_gin_that_includes_another():
    """`python -m bench` puts the current folder on sys.path; at the repository root its methods/
    folder must not become a package `methods` that breaks gin's include (optprior_opt.gin)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "validate",
            "experiment=claims_prior",
            "methods=[optprior_opt]",
            "datasets=[synthetic2d]",
            "seeds=[0]",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
