"""The CLI end to end: run, rerun (cached), validate, and bad input that writes nothing."""

import json

import pytest
from test_bad_inputs import run_cli

SMALL_2D = [
    "datasets=[synthetic2d]",
    "methods=[fm]",
    "seeds=[0]",
    "train.steps=400",
    "synthetic2d.n_max=400",
    "synthetic2d.n_test_per_class=100",
]


def record(root, dataset="synthetic2d", method="fm", seed=0):
    return json.loads((root / "quick" / dataset / method / f"seed{seed}" / "record.json").read_text())


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, bench_cli):
    """One short synthetic2d run shared by the tests below."""
    root = tmp_path_factory.mktemp("run")
    out = bench_cli("run", *SMALL_2D, f"results_dir={root / 'res'}", cwd=root)
    assert out.returncode == 0, out.stderr
    return root / "res", out


@pytest.mark.slow
def test_record_has_the_schema_and_the_flow_beats_its_source(small_run):
    res, out = small_run
    rec = record(res)
    for key in (
        "method",
        "dataset",
        "seed",
        "metrics",
        "higher_is_better",
        "config_hash",
        "operative_config",
        "versions",
        "git_hash",
        "timings_s",
        "n",
        "train",
        "plugins",
        "data",
    ):
        assert key in rec, key
    m = rec["metrics"]
    assert m["swd/all"] < m["swd/all@source"] / 3, m  # the flow adds to what the source alone gives
    assert not any(k.endswith("@init") for k in m)  # the untrained reference is opt-in
    assert rec["higher_is_better"]["swd/all"] is False
    assert rec["higher_is_better"]["coverage/tail"] is True
    assert "train.steps = 400" in rec["operative_config"]
    assert rec["train"]["loss_trace"][-1][1] < rec["train"]["loss_trace"][0][1]
    conv = rec["train"]["convergence"]
    assert conv["window"] == 80 and rec["train"]["converged"] == (conv["rel_change"] < conv["threshold"])
    assert rec["eval_split"] == "test"
    cell = res / "quick" / "synthetic2d" / "fm" / "seed0"
    assert (cell / "operative_config.gin").is_file()
    assert (cell / "backbone" / "model.safetensors").is_file()
    assert "swd/all" in out.stdout and (res / "quick" / "summary.md").is_file()
    # the comparison ends with its report, and a log (no terminal) tells each stage and the cell
    index = res / "quick" / "report" / "index.html"
    assert f"report (tables, sample grids, figures): {index}" in out.stdout and index.is_file()
    assert "synthetic2d/fm/seed0: train done in " in out.stderr
    assert (
        "synthetic2d/fm/seed0: finished in " in out.stderr and f"swd/tail {m['swd/tail']:.4g}" in out.stderr
    )


@pytest.mark.slow
def test_rerun_skips_the_finished_cell(small_run, bench_cli):
    res, _ = small_run
    before = record(res)
    out = bench_cli("run", *SMALL_2D, f"results_dir={res}", cwd=res)
    assert out.returncode == 0, out.stderr
    assert "skipped" in out.stderr
    assert record(res) == before


@pytest.mark.slow
def test_changed_sampling_config_reuses_the_trained_backbone(small_run, bench_cli):
    res, _ = small_run
    out = bench_cli("run", *SMALL_2D, "sample.nfe=8", f"results_dir={res}", cwd=res)
    assert out.returncode == 0, out.stderr
    rec = record(res)
    assert "train" not in rec["timings_s"]  # backbone stage was complete for this config
    assert "sample.nfe = 8" in rec["operative_config"]
    assert "train.steps = 400" in rec["config"] and "sample.nfe = 8" in rec["config"]


@pytest.mark.slow
def test_validate_builds_the_grid_and_writes_nothing(tmp_path, bench_cli):
    out = bench_cli(
        "validate",
        "methods=[fm]",
        "datasets=[synthetic2d,digits_lt]",
        f"results_dir={tmp_path / 'res'}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "2 cell(s) valid" in out.stdout
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["methods=[nope]"], "unknown method 'nope'; did you mean"),
        (["datasets=[synthetic2]"], "did you mean 'synthetic2d'"),
        (["methods=[fm"], "unbalanced brackets"),
        (["train.stepz=3"], "doesn't have a parameter named 'stepz'"),
        (["nosuch.param=3"], "No configurable matching 'nosuch'"),
        (["steps=3"], "neither a grid axis"),
        (["experiment=nope"], "unknown experiment 'nope'"),
        (["--gin_file", "/nonexistent.gin"], "no such file"),
        (["seeds=[-1]"], "non-negative integers"),
        (["flux.attention_head_dim=24", "datasets=[digits_lt]"], "axes_dims_rope"),
        (["sample.solver=rk9"], "unknown solver"),
        (["methods=[optprior]", "optprior.gamma=2"], "optprior.gamma must be in [0, 1]"),
        (["methods=[optprior]", "optprior.k_max=500"], "optprior.k_max=500 needs a class of at least"),
        (["methods=[cpd]", "cpd.sigma=-1"], "cpd.sigma must be > 0"),
        (["methods=[cbfm]", "cbfm.weight=t2"], "cbfm.weight must be one of"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path, monkeypatch, capsys, caplog, args, message
):
    """In-process (tests/cli/test_bad_inputs.py's `run_cli`, checked there against the console script)."""
    monkeypatch.chdir(tmp_path)
    out = run_cli(["run", *args, f"results_dir={tmp_path / 'res'}"], capsys, caplog)
    assert out.code == 2, (out.out, out.err)
    assert len(out.err) == 1 and out.err[0].startswith("bench: error:") and message in out.err[0], out.err
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_the_console_script_exits_2_with_one_line(tmp_path, bench_cli):
    out = bench_cli("run", "methods=[nope]", f"results_dir={tmp_path / 'res'}", cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: unknown method 'nope'"), lines
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_image_cell_trains_flux_and_writes_the_sample_grid(tmp_path, bench_cli):
    res = tmp_path / "res"
    out = bench_cli(
        "run",
        "datasets=[digits_lt]",
        "methods=[fm]",
        "train.steps=10",
        "sample.nfe=2",
        f"results_dir={res}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    cell = res / "quick" / "digits_lt" / "fm" / "seed0"
    assert (cell / "samples.png").stat().st_size > 10_000
    rec = record(res, dataset="digits_lt")
    assert rec["backbone"] == "flux" and "cond_acc/all" in rec["metrics"]
    assert "flux.num_layers = 2" in rec["operative_config"]  # the tiny preset was applied
    from diffusers import FluxTransformer2DModel

    FluxTransformer2DModel.from_pretrained(cell / "backbone" / "transformer")  # plain diffusers


@pytest.mark.slow
def test_eval_on_val_scores_the_validation_split_with_the_same_backbone(small_run, bench_cli):
    res, _ = small_run
    test_metrics = record(res)["metrics"]
    out = bench_cli("run", *SMALL_2D, "pipeline.eval_on=val", f"results_dir={res}", cwd=res)
    assert out.returncode == 0, out.stderr
    rec = record(res)
    assert rec["eval_split"] == "val"
    assert "train" not in rec["timings_s"]  # choosing on val reuses the backbone trained for test
    assert rec["metrics"]["swd/all"] != test_metrics["swd/all"]  # another reference split


@pytest.mark.slow
def test_eval_on_val_without_a_validation_split_is_refused(tmp_path, bench_cli):
    out = bench_cli(
        "run",
        "datasets=[digits_lt]",
        "methods=[fm]",
        "pipeline.eval_on=val",
        f"results_dir={tmp_path / 'res'}",
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "no validation split" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "res" / "quick" / "digits_lt").exists()
