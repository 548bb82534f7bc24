"""The GPU check (`bench bench --only gpu`, bench.perf.gpu_check): without CUDA it says it needs a
GPU, exits 0 and measures nothing; its dry size runs every part's code on the CPU with tiny models
(timings are not asserted: they mean nothing there); a part that fails or overruns its limit is
recorded and the others still run."""

import dataclasses
import json
import os
import textwrap

import psutil
import pytest
import torch

from bench.cli import main as bench_main
from bench.perf import gpu, gpu_check, gpu_parts
from bench.perf.gpu_sizes import N_CLASSES, sizes
from bench.perf.markdown import markdown
from bench.perf.suite import KEYS, machine


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    return gpu_check.measure("smoke", tmp_path_factory.mktemp("gpu_check"))


def test_without_cuda_the_check_needs_a_gpu_and_measures_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "run_check", lambda *a, **k: pytest.fail("nothing runs without CUDA"))
    out = tmp_path / "perf" / "perf.json"
    assert bench_main(["bench", "--only", "gpu", "--out", str(out), "--workdir", str(tmp_path / "work")]) == 0
    printed = capsys.readouterr().out
    assert "the GPU check needs a CUDA GPU" in printed and "nothing was measured" in printed
    result = json.loads(out.read_text())
    assert {k: result[k] for k in KEYS["gpu"]} == dict.fromkeys(KEYS["gpu"])
    assert result["details"]["gpu"] == {"skipped": gpu_check.NEEDS_GPU}
    assert result["errors"] == {}
    assert list((tmp_path / "work" / "gpu").iterdir()) == []  # no part wrote anything


@pytest.mark.slow
def test_dry_check_runs_every_part_without_error(dry):
    parts = dry.details["parts"]
    assert list(parts) == list(gpu_check.PARTS)
    for name, part in parts.items():
        assert "error" not in part, (name, part.get("traceback"))
        assert part["seconds"] > 0
    assert dry.details["size"] == "dry" and dry.details["device"] == "cpu"
    json.dumps(dry.details)  # one JSON file holds it all, with no custom encoder


def test_dry_training_step_counts_and_times_every_step(dry):
    sz, train = sizes("dry"), dry.details["parts"]["train"]
    measured, steps = train["measured"], sz.warmup_steps + sz.timed_steps
    assert len(measured["step_s"]) == len(measured["optimiser_s"]) == steps  # one AdamW step per step
    assert all(s > 0 for s in measured["step_s"] + measured["optimiser_s"])
    assert measured["steady_step_s"] == dry.keys["gpu_step_s"]
    # no device memory counter and no peak FLOP/s on the CPU: nothing guessed
    assert measured["peak_gib"] is None and measured["forward_saved_gib"] is None and measured["mfu"] is None
    # FlopCounterMode's count of a micro-batch = the analytic model FLOPs less the input gradients
    # of the two layers whose inputs need none (test_perf_gpu.test_flop_formula_matches_torch_flop_counter)
    image_tokens, text_tokens = gpu_parts.tokens(sz)
    config = {**sz.flux, "in_channels": 4 * sz.latent_shape[0]}
    d = sz.flux["num_attention_heads"] * sz.flux["attention_head_dim"]
    skipped = sz.micro_batch * (2 * config["in_channels"] * d * image_tokens + 2 * gpu.TIMESTEP_CHANNELS * d)
    per_micro_batch = gpu.flux_train_flops(config, sz.micro_batch, image_tokens, text_tokens) - skipped
    assert measured["flops_per_step_counted"] == per_micro_batch * sz.micro_batches


def test_dry_estimates_are_bench_footprint_and_ratios_follow(dry):
    from bench.pipeline import footprint

    sz = sizes("dry")
    method = gpu_parts.fm_method()
    fp = footprint.estimate(
        gpu_parts.flux_backbone(sz, method, "meta"),
        batch_size=sz.batch_size,
        micro_batches=sz.micro_batches,
        processes=1,
        mixed_precision="bf16",
        sharding="none",
        activation_checkpointing=False,
    )
    estimated = dry.details["parts"]["train"]["estimated"]
    assert estimated["total_gib"] == fp.total_gib and estimated["flops_per_step"] == fp.flops_per_step
    rows = {r["what"]: r for r in dry.details["comparisons"]}
    flops = rows["FLOPs per training step"]
    assert flops["ratio"] == pytest.approx(flops["measured"] / flops["estimated"])
    assert dry.keys["gpu_estimates"]["FLOPs per training step"] == flops["ratio"]
    # memory and time are not measured on the CPU: listed, never compared
    for what in (
        "training step peak memory",
        "training step seconds",
        "sampling peak memory",
        "VAE decode peak memory",
        "downstream small_cnn epoch",
        "downstream small_cnn peak memory",
        "1-process FSDP step peak memory",
    ):
        assert rows[what]["measured"] is None and rows[what]["ratio"] is None, what
        assert rows[what]["estimated"] > 0, what


def test_dry_inference_downstream_and_fsdp_parts(dry):
    sz, parts = sizes("dry"), dry.details["parts"]
    sampling = parts["sampling"]["measured"]
    assert sampling["finite"] and sampling["samples_per_s"] == pytest.approx(sz.samples / sampling["seconds"])
    vae = parts["vae"]["measured"]
    assert vae["finite"] and vae["latent_shape"] == [16, sz.image_size // 8, sz.image_size // 8]
    downstream = parts["downstream"]
    assert downstream["details"]["images"] == sz.downstream_images - max(2, sz.downstream_images // 16)
    assert downstream["measured"]["train_loss"] > 0
    fsdp = parts["fsdp"]
    assert fsdp["details"]["backend"] == "gloo" and fsdp["details"]["world_size"] == 1
    assert len(fsdp["measured"]["losses"]) == sz.fsdp_steps and fsdp["measured"]["finite"]
    assert fsdp["measured"]["gathered_on"] == "cpu" and fsdp["measured"]["gathered_finite"]
    assert not torch.distributed.is_initialized()  # the part's one-rank group is gone


def test_summary_lists_each_estimate_with_its_ratio(dry):
    result = {
        "scale": "smoke",
        "machine": machine(),
        "started": "now",
        "targets": {},
        "errors": {},
        "details": {"gpu": dry.details},
        **dry.keys,
    }
    page = markdown(result)
    assert "## GPU check" in page
    for r in dry.details["comparisons"]:
        assert f"| {r['part']} | {r['what']} ({r['unit']}) |" in page
    assert "estimate" in page and "not compared" in page


@pytest.mark.parametrize(
    "ratio, words",
    [
        (1.9, "estimate 1.90x low"),
        (0.5, "estimate 2.00x high"),
        (1.02, "estimate within 5% (1.02x)"),
        (None, "not compared"),
    ],
)
def test_verdict_says_which_way_an_estimate_is_off(ratio, words):
    assert gpu_check.verdict(ratio).startswith(words)


def test_full_sizes_follow_the_one_gpu_preset_and_fit_eight_minutes():
    sz = sizes("full")
    assert sz.flux == gpu.preset_hyperparameters()
    assert (sz.micro_batch, sz.micro_batches, sz.latent_shape) == (32, 8, (16, 32, 32))
    assert (sz.downstream_arch, sz.image_size) == ("resnet50", 256)
    assert set(sz.limits_s) == set(gpu_check.PARTS)
    assert sum(sz.limits_s.values()) <= sz.budget_s < 8 * 60
    assert N_CLASSES >= 2


PARTS_MODULE = textwrap.dedent("""
    import subprocess, time
    from pathlib import Path

    def broken(sz, workdir):
        raise RuntimeError("boom")

    def slow(sz, workdir):
        child = subprocess.Popen(["sleep", "600"])  # a worker of the part's own
        (Path(workdir) / "grandchild.pid").write_text(str(child.pid))
        time.sleep(600)

    def quick(sz, workdir):
        return {"measured": {"x": 2.0}, "compare": [{"what": "x", "unit": "u", "measured": 2.0,
                                                     "estimated": 1.0, "estimate_of": "one"}]}
""")


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """A module of parts importable here and in the check's child processes."""
    (tmp_path / "fake_gpu_parts.py").write_text(PARTS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return {name: f"fake_gpu_parts:{name}" for name in ("broken", "slow", "quick")}


@pytest.mark.slow
def test_a_failing_part_is_recorded_and_the_next_one_runs(fake_parts, tmp_path):
    parts = {k: fake_parts[k] for k in ("broken", "quick")}
    result = gpu_check.run_check(sizes("dry"), tmp_path / "work", isolate=False, parts=parts)
    assert result["parts"]["broken"]["error"] == "RuntimeError: boom"
    assert result["comparisons"] == [
        {
            "part": "quick",
            "what": "x",
            "unit": "u",
            "measured": 2.0,
            "estimated": 1.0,
            "estimate_of": "one",
            "ratio": 2.0,
            "verdict": "estimate 2.00x low",
        }
    ]


@pytest.mark.slow
def test_a_part_over_its_limit_is_killed_with_its_workers(fake_parts, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "MIN_PART_S", 1)
    # the slow part's limit leaves its child time to start (a light import) and spawn its worker
    sz = dataclasses.replace(sizes("dry"), limits_s={"slow": 6, "broken": 60, "quick": 60})
    result = gpu_check.run_check(sz, tmp_path / "work", isolate=True, parts=fake_parts)
    slow = result["parts"]["slow"]
    assert slow["error"].startswith("PartTimeout: stopped after its 6 s limit")
    grandchild = int((tmp_path / "work" / "slow" / "grandchild.pid").read_text())
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    # a child's own error comes back through its JSON; the next child still runs
    assert result["parts"]["broken"]["error"] == "RuntimeError: boom"
    assert result["parts"]["quick"]["measured"] == {"x": 2.0}
    assert os.path.isfile(tmp_path / "work" / "quick" / "part.json")


def test_the_budget_cuts_a_part_short_or_skips_it(monkeypatch, tmp_path):
    sz = dataclasses.replace(sizes("dry"), limits_s={"a": 100}, budget_s=50)
    now = 1000.0
    monkeypatch.setattr(gpu_check.time, "monotonic", lambda: now)
    assert gpu_check.part_limit(sz, "a", deadline=now + 30) == 30  # less left than its own limit
    assert gpu_check.part_limit(sz, "a", deadline=now + 500) == 100
    assert gpu_check.part_limit(sz, "b", deadline=None) is None
    monkeypatch.setattr(
        gpu_check, "in_child", lambda *a: pytest.fail("a part with no time left is not started")
    )
    part = gpu_check.run_part("fake:part", sz, tmp_path, limit=gpu_check.MIN_PART_S - 1, isolate=True)
    assert part["error"].startswith(f"not started: {gpu_check.MIN_PART_S - 1} s left of the check's budget")
