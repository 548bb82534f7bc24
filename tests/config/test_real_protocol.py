"""Issue 24, item 1: the real datasets bring the paper's protocol whatever the experiment, land in
an experiment that says what they are, and say before they train what they will cost.

- the experiment of a run with no `experiment=` (bench.config.default_experiment): quick for the embedded
  datasets, paper_1gpu for nih_lt / mimic_lt / ct_rate, cpu_smoke with bench's CPU presets, paper
  with the FLUX.1 preset; a mix refused in one line;
- the protocol bound for a real dataset under every experiment, narrowed by the user's bindings,
  --gin_file and dataset-scoped bindings; the embedded datasets keep the quick run's small networks;
- `bench validate` on a fabricated NIH tree with a random-weight VAE prints each cell's folder (not
  under quick/) and protocol in greppable words, and estimates checked against an independent
  computation from the printed FLOPs;
- `bench run`'s grid preview (bench.pipeline.preview) prints CPU-sized grids in one line.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from test_experiments import _nih_root
from tiny_vae import saved_tiny_flux_vae

import gin
from bench.cli import main
from bench.config.default_experiment import default_experiment
from bench.config.gin_config import bindings_text, gin_dir, parse
from bench.config.throughput import Assumptions
from bench.errors import BenchError
from bench.pipeline.assemble import CellSpec, RunRequest, config_files, load_plugins
from bench.pipeline.budget import CellEstimate, cnn_forward_flops
from bench.pipeline.preview import CellView, grid_preview, validate_lines

REAL = ["nih_lt", "mimic_lt", "ct_rate"]
PROTOCOL = {
    "features.arch": "densenet121",
    "downstream.arch": "resnet50",
    "downstream.n_seeds": 3,
    "generative.n_total": 50000,
    "fid.reference": "train",
    "sample.n_per_class": "targets",
}


# -- which experiment a run is ---------------------------------------------------------------------
def test_the_experiment_is_chosen_from_the_datasets_and_bench_presets():
    assert default_experiment(None) == "quick"  # quick's own grid: embedded datasets
    assert default_experiment(["phantom_lt", "synthetic2d"]) == "quick"
    assert default_experiment(["medmnist"]) == "quick"  # a CPU-sized real set runs the quick protocol
    assert default_experiment(["nih_lt"]) == "paper_1gpu"
    assert default_experiment(["nih_lt", "mimic_lt", "ct_rate"]) == "paper_1gpu"
    assert default_experiment(["nih_lt"], ["presets/cpu_smoke.gin"]) == "cpu_smoke"
    assert default_experiment(["nih_lt"], [str(gin_dir() / "presets" / "tiny.gin")]) == "cpu_smoke"
    assert default_experiment(["ct_rate"], ["presets/flux1.gin"]) == "paper"
    assert (
        default_experiment(["nih_lt"], ["presets/flux1.gin", "presets/cpu_smoke.gin"]) == "cpu_smoke"
    )  # last wins


def test_a_grid_mixing_embedded_and_real_datasets_is_one_clear_error(capsys):
    with pytest.raises(
        BenchError,
        match=r"mixes datasets of the quick run \(phantom_lt: experiment quick\) with "
        r"real benchmarks .*\(nih_lt: experiment paper_1gpu\); run them as two "
        r"commands, or name one experiment for all",
    ):
        default_experiment(["phantom_lt", "nih_lt"])
    assert default_experiment(["phantom_lt", "nih_lt"], strict=False) == "quick"  # bench data stats
    assert main(["validate", "datasets=[phantom_lt,nih_lt]", "methods=[fm]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: error: datasets=[phantom_lt,nih_lt] mixes") and "\n" not in err


# -- the protocol the configuration binds -------------------------------------------------------
def _bound(experiment: str, dataset: str, bindings=(), files=()) -> dict:
    """The protocol's settings in a cell's parsed configuration, as `bench run` parses it."""
    load_plugins()
    request = RunRequest(experiment=experiment, bindings=list(bindings), gin_files=list(files))
    parse(
        config_files(CellSpec(experiment, dataset, "fm", 0), request),
        request.bindings,
        dataset,
        REAL + ["phantom_lt"],
    )
    from bench.config.evaluation import FeatureConfig, GenerativeSet
    from bench.config.sample import SampleConfig
    from bench.evaluators.downstream import Downstream
    from bench.evaluators.fid import FID

    down = Downstream()
    return {
        "features.arch": FeatureConfig().arch,
        "downstream.arch": down.arch,
        "downstream.n_seeds": down.n_seeds,
        "generative.n_total": GenerativeSet().n_total,
        "fid.reference": FID().reference,
        "sample.n_per_class": SampleConfig().n_per_class,
    }


@pytest.mark.parametrize("experiment", ["quick", "claims", "paper_1gpu", "paper", "ablation"])
@pytest.mark.parametrize("dataset", REAL)
def test_the_real_datasets_bring_the_papers_protocol_whatever_the_experiment(experiment, dataset):
    assert _bound(experiment, dataset) == PROTOCOL


def test_the_embedded_datasets_keep_the_quick_runs_small_networks():
    assert _bound("quick", "phantom_lt") == {
        "features.arch": "small_cnn",
        "downstream.arch": "small_cnn",
        "downstream.n_seeds": 3,
        "generative.n_total": None,
        "fid.reference": "test",
        "sample.n_per_class": "targets",
    }


def test_the_user_narrows_the_protocol_by_binding_gin_file_or_dataset_scope(tmp_path):
    narrowed = _bound(
        "paper_1gpu",
        "nih_lt",
        ["features.arch = 'small_cnn'", "downstream.n_seeds = 1", "generative.n_total = None"],
    )
    assert narrowed == {
        **PROTOCOL,
        "features.arch": "small_cnn",
        "downstream.n_seeds": 1,
        "generative.n_total": None,
    }
    scoped = _bound(
        "paper_1gpu", "nih_lt", ["nih_lt/downstream.arch = 'small_cnn'", "mimic_lt/downstream.arch = 'x'"]
    )
    assert scoped == {**PROTOCOL, "downstream.arch": "small_cnn"}
    own = tmp_path / "mine.gin"
    own.write_text("generative.n_total = 10000\nfid.reference = 'test'\n")
    assert _bound("paper_1gpu", "ct_rate", files=[own]) == {
        **PROTOCOL,
        "generative.n_total": 10000,
        "fid.reference": "test",
    }
    smoke = _bound("cpu_smoke", "nih_lt", files=["presets/cpu_smoke.gin"])
    assert smoke == {
        **PROTOCOL,
        "features.arch": "small_cnn",
        "downstream.arch": "small_cnn",
        "downstream.n_seeds": 1,
        "generative.n_total": 200,
        "sample.n_per_class": None,
    }


def test_budget_settings_feed_no_hash():
    load_plugins()
    parse([gin_dir() / "base.gin"], ["budget.mfu = 0.5", "budget.peak_tflops = 100.0"])
    assert "budget" not in bindings_text() and Assumptions().mfu == 0.5
    with pytest.raises(BenchError, match=r"budget.mfu=1.5: use a fraction"):
        Assumptions(mfu=1.5)


# -- bench validate on a fabricated NIH tree -----------------------------------------------------
@pytest.fixture(scope="module")
def nih_validate(tmp_path_factory):
    """`bench validate methods=[optprior,cbfm] datasets=[nih_lt]` on a fabricated tree (the
    headline command, budget.mfu given as a user would), its output."""
    tmp = tmp_path_factory.mktemp("nih")
    (tmp / "nih").mkdir()
    args = [
        "validate",
        "methods=[optprior,cbfm]",
        "datasets=[nih_lt]",
        f"nih_lt.root={_nih_root(tmp / 'nih')}",
        f"flux_vae.path={saved_tiny_flux_vae(tmp / 'vae')}",
        "executor.device_memory_gib=80",
        f"results_dir={tmp / 'res'}",
    ]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main([*args, "budget.mfu=0.7"])
    gin.clear_config()
    assert code == 0
    assert not (tmp / "res").exists()
    return tmp / "res", buffer.getvalue()


@pytest.mark.slow
def test_validate_prints_each_cells_folder_and_protocol_in_words(nih_validate):
    res, out = nih_validate
    cells = re.findall(r"^ok  (\S+)  config", out, re.M)
    assert cells == [f"nih_lt/{m}/seed{s}" for m in ("optprior", "cbfm") for s in (0, 1, 2)]
    folders = re.findall(r"^    results: (\S+)$", out, re.M)
    assert folders == [str(res / "paper_1gpu" / c) for c in cells]
    assert "quick" not in "".join(folders)
    protocols = re.findall(r"^    protocol: (.+)$", out, re.M)
    assert len(protocols) == 6
    for line in protocols:
        assert "feature network densenet121" in line
        assert "downstream network resnet50, 3 classifier seeds" in line
        assert "50,000 generative samples vs the train split" in line
        assert "generative seeds [0, 1, 2]" in line
    assert "6 cell(s) valid (experiment paper_1gpu)" in out


def test_validate_estimates_gpu_hours_memory_and_disk_from_the_footprint(nih_validate):
    _, out = nih_validate
    steps, batch, nfe, n_generative = 2000, 256, 32, 50000  # base.gin; the protocol's generative set
    gflop = [float(g.replace(",", "")) for g in re.findall(r"~([\d,.]+) GFLOP per step", out)]
    params = [float(p.replace(",", "")) * 1e6 for p in re.findall(r"([\d,.]+) M parameters", out)]
    estimates = re.findall(r"^    estimate: (.+)$", out, re.M)
    assert len(gflop) == len(estimates) == 6
    throughput = 989e12 * 0.7  # budget.mfu=0.7 on the command line
    for flops, n, line in zip(gflop, params, estimates):
        train = float(re.search(r"GPU-h \(train ([\d.]+)", line)[1])
        assert train == pytest.approx(flops * 1e9 * steps / throughput / 3600, abs=0.006)
        # sampling: one forward (a third of a step's FLOPs per sample) per sample and ODE step; the
        # fabricated tree's plan augments no class, so only the 50,000 generative samples
        sampling = float(re.search(r"sampling ([\d.]+)", line)[1])
        assert sampling == pytest.approx(
            n_generative * nfe * flops * 1e9 / (3 * batch) / throughput / 3600, abs=0.006
        )
        peak = float(re.search(r"peak GiB per device: train ([\d.]+)", line)[1])
        assert 2 < peak < 80
        # one solver step and the VAE's decoding traced under fake tensors (inference_memory), at
        # batch 1 where the batch is chosen to fit the device at run time (the one-GPU preset's)
        sampling = float(re.search(r"sampling@1 ([\d.]+)", line)[1])
        assert n * 2 / 2**30 < sampling < peak  # more than bf16 weights, less than training
        assert re.search(r"vae decode@1 [\d.]+", line)
        # one training step of each CNN at its batch (classifier_memory): more than its weights
        assert float(re.search(r"downstream resnet50@256 ([\d.]+)", line)[1]) > 23.5e6 * 4 / 2**30
        assert float(re.search(r"features densenet121@64 ([\d.]+)", line)[1]) > 7e6 * 4 / 2**30
        backbone = float(re.search(r"backbone ([\d.]+)", line)[1])
        # printed parameters are rounded to 0.1 M; fp32 weights
        assert backbone == pytest.approx(n * 4 / 2**30, rel=1e-3)
        checkpoints = float(re.search(r"checkpoints while training ([\d.]+)", line)[1])
        assert checkpoints == pytest.approx(2 * 12 * n / 2**30, rel=1e-3)
        latents = float(re.search(r"samples ([\d.]+)", line)[1])
        assert latents == pytest.approx(n_generative * 16 * 32 * 32 * 4 / 2**30, abs=0.006)  # fp32 latents
    # the dataset's shared terms (features, latent and image caches) are on its first cell only
    assert [("latent cache" in line) for line in estimates] == [True] + [False] * 5
    assert "at 989 TFLOP/s peak x MFU 0.7 (CNNs 0.08)" in out


def test_cnn_flops_are_counted_on_the_meta_device():
    # ResNet-50 at 224 x 224 and 3 channels: 4.1 G multiply-adds (torchvision), 2 FLOPs each
    assert cnn_forward_flops("resnet50", (3, 224, 224), 1000) == pytest.approx(2 * 4.1e9, rel=0.03)
    # small images too (the CPU smoke sizes): a ResNet-50's last map is 1 x 1 at 32 x 32, and its
    # convolutions scale with the pixels, so 32 x 32 costs about a quarter of 64 x 64
    small, larger = (
        cnn_forward_flops("resnet50", (1, 32, 32), 8),
        cnn_forward_flops("resnet50", (1, 64, 64), 8),
    )
    assert 0 < small < larger and small == pytest.approx(larger / 4, rel=0.05)
    assert cnn_forward_flops("densenet121", (1, 8, 8), 20) != cnn_forward_flops(
        "densenet121", (1, 8, 8), 20
    )  # NaN


def test_the_run_preview_is_one_line_for_cpu_sized_grids_and_a_table_otherwise():
    small = [
        CellView(f"phantom_lt/fm/seed{s}", Path("r/quick"), "p", CellEstimate("x", {"train": 1e-4}))
        for s in (0, 1)
    ]
    text = grid_preview(small, Assumptions(), "quick")
    assert (
        text
        == "experiment quick: 2 cell(s), each CPU-sized (< 0.01 GPU-h estimated): no GPU estimate printed"
    )
    big = CellView(
        "nih_lt/fm/seed0",
        Path("r/paper_1gpu/nih_lt/fm/seed0"),
        "p",
        CellEstimate(
            "x", {"train": 2.0, "sampling": 1.5}, {"train": 46.2}, {"backbone": 8.0, "samples": 3.0}
        ),
    )
    table = grid_preview([big, *small], Assumptions(), "paper_1gpu").splitlines()
    assert table[0].startswith("experiment paper_1gpu: 3 cell(s); estimates at 989 TFLOP/s peak x MFU 0.35")
    assert re.match(r"\s+nih_lt/fm/seed0\s+3\.5\s+46\.2\s+11\.0\s+r/paper_1gpu/nih_lt/fm/seed0$", table[2])
    assert re.match(r"\s+total\s+3\.5\s+11\.0  kept, plus up to 0\.0 GiB of checkpoints", table[3])
    assert table[-1] == "  and 2 CPU-sized cell(s)"


def test_a_cell_the_estimates_cannot_describe_says_so_in_one_line():
    view = CellView(
        "x/fm/seed0", Path("r/x/fm/seed0"), "not described (KeyError)", CellEstimate("x/fm/seed0")
    )
    assert validate_lines(view) == [
        "    results: r/x/fm/seed0",
        "    protocol: not described (KeyError)",
        "    estimate: not available (the warning above says why)",
    ]


def test_an_embedded_dataset_validates_under_quick_with_the_small_networks(tmp_path, capsys):
    assert main(["validate", "datasets=[phantom_lt]", "methods=[fm]", f"results_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert f"    results: {tmp_path / 'quick' / 'phantom_lt' / 'fm' / 'seed0'}\n" in out
    assert (
        "    protocol: feature network small_cnn; downstream network small_cnn, 3 classifier seeds; no separate "
        "generative set"
    ) in out
    assert "generative seed [0]\n" in out and "1 cell(s) valid (experiment quick)" in out
