"""CI runs exactly the README's test command, so what a developer is told to run is what CI checks."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```bash\n{ci}\n```" in readme, ci
    assert "ruff check" in ci and "ruff format --check" in ci and "pytest" in ci
