"""Third-party plugins: discovered through entry points of a dist-info folder, never installed."""

import json
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
"""A third-party method living outside bench."""
import bench


@bench.register_method("myfm")
class MyFM(bench.Method):
    """Overrides nothing: must behave exactly as bench's own vanilla FM."""
'''


def make_plugin(root: Path, name: str, body: str, entry: str) -> None:
    """Write package `name` plus a fake `<name>-0.1.dist-info` advertising `entry`."""
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(textwrap.dedent(body))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[bench.methods]\n{entry}\n")


@pytest.fixture
def plugin_path(tmp_path):
    make_plugin(tmp_path, "myplug", PLUGIN, "myfm = myplug:MyFM")
    make_plugin(
        tmp_path, "brokenplug", "raise ImportError('missing dependency xyz')", "broken = brokenplug:Nothing"
    )
    return tmp_path


def test_ls_lists_entry_point_plugin_with_origin(plugin_path, bench_cli):
    out = bench_cli("ls", "methods", cwd=plugin_path, env_extra={"PYTHONPATH": str(plugin_path)})
    assert out.returncode == 0, out.stderr
    line = next(row for row in out.stdout.splitlines() if "myfm" in row)
    assert "myplug 0.1" in line and "myplug:MyFM" in line


@pytest.mark.slow
def test_plugin_runs_end_to_end_and_equals_fm(plugin_path, bench_cli):
    """A subclass that overrides nothing gives exactly fm's record metrics; broken plugin skipped."""
    res = plugin_path / "res"
    out = bench_cli(
        "run",
        "methods=[myfm,fm]",
        "datasets=[synthetic2d]",
        "seeds=[0]",
        f"results_dir={res}",
        "train.steps=150",
        "synthetic2d.n_max=400",
        cwd=plugin_path,
        env_extra={"PYTHONPATH": str(plugin_path)},
    )
    assert out.returncode == 0, out.stderr
    assert "skipping method plugin 'broken'" in out.stderr, out.stderr
    recs = {
        m: json.loads((res / "quick" / "synthetic2d" / m / "seed0" / "record.json").read_text())
        for m in ("myfm", "fm")
    }
    # each record names the distribution every plugin it used comes from
    assert recs["myfm"]["plugins"]["method/myfm"] == "myplug 0.1"
    assert recs["fm"]["plugins"]["method/fm"].startswith("medaug-bench ")
    assert recs["myfm"]["plugins"]["dataset/synthetic2d"] == recs["fm"]["plugins"]["dataset/synthetic2d"]
    # equal up to float noise: BLAS may split reductions differently when the machine is busy
    assert recs["myfm"]["metrics"] == pytest.approx(recs["fm"]["metrics"], rel=1e-5), recs
    losses = [[loss for _, loss in recs[m]["train"]["loss_trace"]] for m in ("myfm", "fm")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    cached = list((res / "cache" / "latents").iterdir())
    assert len(cached) == 1, cached  # encoded once, shared by both cells


@pytest.mark.slow
def test_broken_plugin_named_explicitly_is_a_clear_error(plugin_path, bench_cli):
    out = bench_cli(
        "validate",
        "methods=[broken]",
        "datasets=[synthetic2d]",
        cwd=plugin_path,
        env_extra={"PYTHONPATH": str(plugin_path)},
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("bench: error: method 'broken' failed to load")
