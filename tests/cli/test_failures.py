"""Failure isolation: a cell whose training diverges fails alone; the grid goes on and exits 1."""

import json
import os

import pytest

# cpd.sigma binds only the cpd cell: its source x0 = m_c + 1e30 * eps makes the squared
# flow-matching target overflow float32, so the first training loss is inf, deterministically.
GRID = [
    "datasets=[synthetic2d]",
    "methods=[cpd,fm]",
    "seeds=[0]",
    "cpd.sigma=1e30",
    "train.steps=40",
    "train.batch_size=128",
    "train.threads=1",
    "train.checkpoint_every=10",
    "mlp.hidden=32",
    "mlp.depth=2",
    "sample.nfe=4",
    "synthetic2d.n_max=400",
    "synthetic2d.n_test_per_class=50",
]


@pytest.mark.slow
def test_diverging_cell_fails_alone_with_a_clear_message(tmp_path, bench_cli):
    res = tmp_path / "res"
    out = bench_cli("run", *GRID, f"results_dir={res}", cwd=tmp_path, env_extra={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 1, out.stderr
    reason = "CellFailed: non-finite training loss (inf) at step 1; lower train.lr or enable train.grad_clip"
    assert (
        f"bench: error: cell synthetic2d/cpd/seed0 failed: {reason} (details: "
        f"{res / 'quick/synthetic2d/cpd/seed0/failure.json'}; fix it and rerun: finished cells are kept)\n"
        in out.stderr
    )

    failed, ok = (res / "quick" / "synthetic2d" / m / "seed0" for m in ("cpd", "fm"))
    failure = json.loads((failed / "failure.json").read_text())
    assert failure["status"] == "failed" and failure["reason"] == reason
    assert "CellFailed" in failure["traceback"]
    assert not (failed / "record.json").exists() and not (failed / "backbone").exists()

    # the failing cell ran first; the next one still trained and was recorded
    record = json.loads((ok / "record.json").read_text())
    assert record["status"] == "ok" and record["method"] == "fm"
    assert record["train"]["steps"] == 40 and "swd/all" in record["metrics"]
    assert "swd/all" in out.stdout  # the summary of the finished cells is still printed
    assert not (ok / "failure.json").exists()
    # no cell lock, no temporary file (grid.json's lock file stays: it is reused, never a leftover)
    assert [p.name for p in res.rglob(".*") if p.is_file() or p.is_dir()] == [".grid.lock"]


def test_failure_json_is_removed_when_the_cell_succeeds(tmp_path, monkeypatch):
    """A cell that failed before and now succeeds drops its stale failure.json."""
    import bench.pipeline.execute as cellrun
    from bench.pipeline.assemble import CellSpec, RunRequest

    spec = CellSpec("quick", "synthetic2d", "fm", 0)
    folder = spec.folder(tmp_path)
    monkeypatch.setattr(cellrun, "build_cell", lambda spec, request: spec)
    monkeypatch.setattr(cellrun, "run_cell", lambda cell, results_dir: 1 / 0)
    failed = cellrun.execute_cell(spec, RunRequest(results_dir=tmp_path))
    assert failed.status == "failed" and failed.reason == "ZeroDivisionError: division by zero"
    assert json.loads((folder / "failure.json").read_text())["reason"] == failed.reason

    monkeypatch.setattr(cellrun, "run_cell", lambda cell, results_dir: {"status": "ok"})
    assert cellrun.execute_cell(spec, RunRequest(results_dir=tmp_path)).status == "ok"
    assert sorted(os.listdir(folder)) == []  # no failure.json, no lock


@pytest.mark.slow
def test_bad_data_fails_its_cell_and_the_other_datasets_still_run(tmp_path, capsys):
    """A NaN image found while nih_lt's cell encodes fails that cell (failure.json, exit 1 at the
    end); synthetic2d's cell still runs and is recorded."""
    import numpy as np
    import pandas as pd
    from PIL import Image
    from test_bad_inputs import TINY_NIH_RUN, nih_tree

    import gin
    from bench.cli import main

    root, res = nih_tree(tmp_path), tmp_path / "res"
    pd.read_csv(root / "nih-cxr-lt_single-label_train.csv").to_csv(
        root / "nih-cxr-lt_single-label_balanced-test.csv", index=False
    )
    # a 16-bit TIFF-free way to a NaN: a float image saved as a 32-bit float TIFF with a NaN pixel
    pixels = np.full((8, 8), 0.5, np.float32)
    pixels[2, 3] = np.nan
    Image.fromarray(pixels, mode="F").save(root / "images" / "00000003_000.tif")
    (root / "images" / "00000003_000.png").unlink()
    (root / "images" / "00000003_000.tif").rename(root / "images" / "00000003_000.png")
    try:
        code = main(
            [
                "run",
                "experiment=quick",
                "datasets=[nih_lt,synthetic2d]",
                "pipeline.encoder=pixel",
                "nih_lt.metadata_file=None",
                "nih_lt.size=8",
                f"nih_lt.root={root}",
                *TINY_NIH_RUN,
                "synthetic2d.n_max=400",
                "synthetic2d.n_test_per_class=10",
                f"results_dir={res}",
            ]
        )
    finally:
        gin.clear_config()
    err = capsys.readouterr().err
    assert code == 1, err
    failed = [line for line in err.splitlines() if line.startswith("bench: error: ")]
    assert len(failed) == 1 and "cell nih_lt/fm/seed0 failed: " in failed[0], err
    assert "NaN" in failed[0]
    failure = json.loads((res / "quick" / "nih_lt" / "fm" / "seed0" / "failure.json").read_text())
    assert "NaN" in failure["reason"]
    record = json.loads((res / "quick" / "synthetic2d" / "fm" / "seed0" / "record.json").read_text())
    assert record["status"] == "ok"
