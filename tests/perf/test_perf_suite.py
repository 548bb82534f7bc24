"""`bench bench`: the suite writes every key with its target verdict, isolates a failing case, and
the FID, offline-stage and quick-run cases measure what they say (smoke scale)."""

import json
import sys
import types

import numpy as np
import pytest
import scipy.linalg

from bench.errors import BenchError
from bench.evaluators.fid import gaussian_stats
from bench.perf import frechet, offline, quickrun, suite
from bench.perf.case import Measurement, median
from bench.perf.markdown import markdown


def test_targets_say_whether_and_by_how_much_they_are_missed():
    at_most, at_least = suite.Target("<=", 600.0), suite.Target(">=", 5.0)
    assert at_most.met(600.0) and not at_most.met(900.0)
    assert at_most.miss(900.0) == "1.50x over the target" and at_most.miss(100.0) == ""
    assert at_least.met(9.1) and at_least.miss(2.5) == "2.00x under the target"
    assert median([3.0, 1.0, 100.0]) == 3.0 and median([4.0, 1.0, 2.0, 3.0]) == 2.5


def test_frechet_case_agrees_with_the_sqrtm_route(tmp_path):
    m = frechet.measure("smoke", tmp_path)
    assert m.keys["fid_rel_diff"] < 1e-8 and m.keys["fid_speedup_vs_sqrtm"] > 0
    # recompute the reference value independently from the same seeded features
    rng = np.random.default_rng(0)
    n, d = frechet.SIZES["smoke"]
    a, b = (frechet.correlated_features(rng, n, d, s) for s in (0.0, 0.1))
    (mu1, s1), (mu2, s2) = gaussian_stats(a), gaussian_stats(b)
    ref = float(
        (mu1 - mu2) @ (mu1 - mu2)
        + np.trace(s1)
        + np.trace(s2)
        - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    )
    assert m.details["fid_sqrtm"] == pytest.approx(ref, rel=1e-10)


@pytest.mark.slow
def test_offline_case_times_every_part_of_the_stage_in_a_child(tmp_path):
    m = offline.measure("smoke", tmp_path)
    parts = m.details["seconds"]
    assert set(parts) == {"induction", "init", "optimisation", "geometry", "bayes_risk"}
    assert m.keys["offline_stage_s"] == pytest.approx(sum(parts.values()))  # nothing extrapolated
    assert not m.details["extrapolated"] and m.details["steps_timed"] == 50
    assert 0.05 < m.keys["offline_stage_peak_gib"] < 4  # torch alone is ~0.3 GiB
    assert len(m.details["k"]) == offline.SIZES["smoke"][2]


def test_offline_steps_below_the_stage_are_extrapolated(tmp_path, monkeypatch):
    child = {
        "seconds": {"induction": 10.0, "init": 1.0, "optimisation": 4.0, "geometry": 2.0, "bayes_risk": 0.0},
        "peak_gib": 3.0,
        "n": 9,
        "k": [1],
        "batch_size": 8,
        "threads": 2,
    }

    def fake_child(command, **_):
        (tmp_path / "offline.json").write_text(json.dumps(child))
        return types.SimpleNamespace(returncode=0, stderr="")

    monkeypatch.setattr(offline.subprocess, "run", fake_child)
    monkeypatch.setenv(offline.STEPS_ENV, "100")
    m = offline.measure("full", tmp_path)
    assert m.keys["offline_stage_s"] == pytest.approx(10 + 1 + 2 + 4.0 * 2500 / 100)
    assert m.details["extrapolated"] and m.details["seconds_per_step"] == pytest.approx(0.04)


def test_stage_totals_sum_over_cells():
    cells = [{"train": 2.0, "evaluate/fid": 1.0, "total": 5.0}, {"train": 3.0, "total": 4.0}]
    assert quickrun.stage_totals(cells) == {"train": 5.0, "evaluate/fid": 1.0}


@pytest.mark.slow
def test_quick_run_case_times_a_cold_bench_run(tmp_path):
    m = quickrun.measure("smoke", tmp_path)
    stages, cells = m.keys["quick_run_stages_s"], m.details["cells"]
    assert list(cells) == ["synthetic2d/fm/seed0"] and stages["train"] > 0
    covered = sum(t["total"] for t in cells.values())
    assert m.keys["quick_run_cells_s"] == pytest.approx(covered) and covered < m.keys["quick_run_s"]
    assert m.keys["quick_run_side_by_side"] == pytest.approx(covered / m.keys["quick_run_s"])
    assert m.keys["quick_rerun_s"] > 0  # the second run reused the cell: the records are the first run's
    assert m.keys["quick_rerun_ratio"] == pytest.approx(m.keys["quick_rerun_s"] / m.keys["quick_run_s"])
    with pytest.raises(RuntimeError, match="must start cold"):
        quickrun.measure("smoke", tmp_path)


def test_suite_writes_every_key_and_isolates_a_failing_case(tmp_path, monkeypatch):
    good = types.ModuleType("good_case")
    good.measure = lambda scale, workdir: Measurement(
        {"fid_speedup_vs_sqrtm": 2.5, "fid_rel_diff": 1e-9}, {"scale": scale}
    )
    bad = types.ModuleType("bad_case")

    def explode(scale, workdir):
        raise ValueError("no luck\nsecond line")

    bad.measure = explode
    monkeypatch.setitem(sys.modules, "good_case", good)
    monkeypatch.setitem(sys.modules, "bad_case", bad)
    monkeypatch.setitem(suite.CASES, "fid", "good_case")
    monkeypatch.setitem(suite.CASES, "offline", "bad_case")
    out = tmp_path / "perf" / "perf.json"
    result = suite.run_suite(["offline", "fid"], "smoke", tmp_path / "work", out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["errors"] == {"offline": "ValueError: no luck"}
    assert result["offline_stage_s"] is None and result["offline_stage_peak_gib"] is None
    assert result["targets"]["fid_speedup_vs_sqrtm"] == {
        "target": ">= 5",
        "value": 2.5,
        "met": False,
        "miss": "2.00x under the target",
    }
    assert result["targets"]["fid_rel_diff"]["met"] and "offline_stage_s" not in result["targets"]
    page = markdown(result)
    assert "| `fid_speedup_vs_sqrtm` | 2.500 | >= 5 | **missed**: 2.00x under the target |" in page
    assert "| `offline_stage_s` | not measured | <= 600 | – |" in page
    assert "- offline: ValueError: no luck" in page


@pytest.mark.slow
def test_unknown_case_or_scale_is_a_one_line_error(tmp_path, bench_cli):
    with pytest.raises(BenchError, match=r"unknown benchmark case\(s\) nope \(known: overhead, offline"):
        suite.check_cases(["fid", "nope"])
    out = bench_cli("bench", "--only", "fid,nope", "--out", str(tmp_path / "p.json"), cwd=tmp_path)
    assert (
        out.returncode == 2 and out.stderr.count("\n") == 1 and "unknown benchmark case(s) nope" in out.stderr
    )
    assert list(tmp_path.iterdir()) == []
