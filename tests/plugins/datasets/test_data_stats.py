"""`bench data stats`: the dataset table equals what a run loads, with the augmentation targets."""

import re

import numpy as np
import pytest

from bench.config.data import AugmentationTargets
from bench.data.targets import augmentation_plan
from bench.datasets.digits_lt import DigitsLT


def _rows(markdown: str) -> list[list[str]]:
    """Body rows of the first Markdown table in `markdown`, as stripped cells."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


@pytest.mark.slow
def test_stats_table_matches_the_loaded_split_and_the_targets(tmp_path, bench_cli):
    out = bench_cli("data", "stats", "datasets=[digits_lt]", "digits_lt.imbalance_ratio=20", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    ds = DigitsLT(imbalance_ratio=20)
    counts = ds.load("train").counts(10).tolist()
    plan = augmentation_plan(AugmentationTargets(), counts, ds.class_names)
    rows = _rows(out.stdout)
    assert [int(r[2]) for r in rows] == counts
    assert [r[4] for r in rows] == [t.group for t in plan]
    assert [int(r[5]) for r in rows] == [t.synthetic for t in plan]
    assert [int(r[7]) for r in rows] == [40] * 10  # the balanced test split
    ratio = float(re.search(r"imbalance ratio ([\d.]+)", out.stdout).group(1))
    assert np.isclose(ratio, max(counts) / min(counts), atol=0.05)
    assert f"{sum(counts):,} train samples" in out.stdout
    assert not list(tmp_path.iterdir())  # stats writes nothing


@pytest.mark.slow
def test_stats_bad_usage_is_one_line(tmp_path, bench_cli):
    for args, message in (
        (["data", "stats"], "takes datasets=[name,...]"),
        (["data", "stats", "datasets=[digits]"], "did you mean 'digits_lt'"),
        (["data", "stats", "datasets=[digits_lt]", "methods=[fm]"], "takes datasets="),
    ):
        out = bench_cli(*args, cwd=tmp_path)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and message in lines[0], out.stderr
