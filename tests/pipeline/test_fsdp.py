"""Sharded training (train.sharding='fsdp', bench.pipeline.sharding) on two CPU processes (gloo):
the tiny FLUX preset, built on the meta device on rank 1 as the runner builds it, trains to the
weights of one process; in bf16 it agrees with unsharded bf16 training to bf16 precision, with the
time reaching FLUX in fp32; and it resumes after a kill -9 from its asynchronously written sharded
checkpoints exactly as if never interrupted (with activation checkpointing on, which changes no
weight)."""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil  # accelerate's dependency
import pytest
import torch
from safetensors.torch import load_file

from bench.backbones.flux import FluxBackbone
from bench.backbones.mlp import MLPBackbone
from bench.config.train import TrainConfig
from bench.errors import BenchError
from bench.pipeline.sharding import _meta_twin, build_device, mixed_precision_policy, shard_units

# the tiny preset (gin/presets/tiny.gin) on 8 x 8 single-channel latents
TINY = dict(
    num_layers=2,
    num_single_layers=2,
    attention_head_dim=32,
    num_attention_heads=4,
    joint_attention_dim=64,
    pooled_projection_dim=64,
    axes_dims_rope=(8, 12, 12),
)
STEPS, EVERY = 30, 5
SCRIPT = textwrap.dedent(f"""
    import json, sys
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from bench.backbones.flux import FluxBackbone
    from bench.methods.fm import FlowMatching
    from bench.pipeline.sharding import build_device
    from bench.config.train import TrainConfig
    from bench.pipeline.trainer import train
    from bench.runtime import distributed

    out, sharding, checkpointing, precision = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "ac", sys.argv[4]
    torch.manual_seed(0)
    z = torch.randn(96, 1, 8, 8)
    y = (z.mean((1, 2, 3)) > 0).long()
    method = FlowMatching()
    method.setup(2)
    torch.manual_seed(1)
    with build_device(sharding):  # as the runner builds it: rank 1 of a sharded launch on the meta device
        backbone = FluxBackbone((1, 8, 8), method.vocab_size, method.n_tokens, **{TINY!r})
    initial = {{k: v.clone() for k, v in backbone.state_dict().items()}}
    seen = set()  # the dtype of the time FLUX's transformer is given (sampling gives it fp32)
    backbone.transformer.register_forward_pre_hook(lambda m, a, kw: seen.add(str(kw["timestep"].dtype)),
                                                   with_kwargs=True)
    cfg = TrainConfig(steps={STEPS}, batch_size=16, lr=1e-3, log_every=1, micro_batches=2, sharding=sharding,
                      activation_checkpointing=checkpointing, checkpoint_every={EVERY}, checkpoint_minutes=0,
                      mixed_precision=precision)
    result = train(method, backbone, z, y, cfg, seed=0, checkpoint_dir=out / "checkpoints", config_hash="h")
    rank = distributed.rank()
    save_file({{k: v.contiguous() for k, v in backbone.state_dict().items()}}, str(out / f"rank{{rank}}.safetensors"))
    if rank == 0:
        save_file({{k: v.contiguous() for k, v in initial.items()}}, str(out / "initial.safetensors"))
    (out / f"rank{{rank}}.json").write_text(json.dumps({{"loss_trace": result.loss_trace,
                                                          "resumed_from": result.resumed_from,
                                                          "time_dtypes": sorted(seen)}}))
    distributed.finish()
    distributed.leave(0)  # as bench's launched ranks leave: no teardown for gloo's threads to abort
""")
ENV = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
TORCHRUN = Path(sys.executable).with_name("torchrun")
WEIGHT_ATOL = 1e-5  # sharded vs one process: the same sums, reduced in another order
LOSS_RTOL = 1e-5
# bf16, sharded vs unsharded: FSDP gathers bf16 weights where autocast casts fp32 ones per operation,
# and the two processes reduce in another order, so single bf16 roundings differ. Each step's loss
# must agree to bf16's own precision (2^-8 relative: measured 3e-4; 8e-3 when FSDP cast the inputs,
# `t` included, to bf16), and the weights must have moved the same way, far more alike than bf16
# training is to fp32 training (relative difference of the updates: measured 0.014 vs 0.22; 0.28
# with the cast inputs)
BF16_LOSS_RTOL = 2.0**-8
BF16_UPDATE_VS_FP32 = 0.25


def _command(
    script: Path, out: Path, sharding: str, checkpointing: str = "no", precision: str = "no"
) -> list[str]:
    launch = (
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2"] if sharding == "fsdp" else [sys.executable]
    )
    return [*launch, str(script), str(out), sharding, checkpointing, precision]


def _run(command: list[str], out: Path) -> None:
    out.mkdir(exist_ok=True)
    res = subprocess.run(command, cwd=out, capture_output=True, text=True, timeout=300, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]


def _kill_after_first_checkpoint(command: list[str], out: Path) -> int:
    """Start the run, kill -9 the launcher and its workers once a checkpoint is complete; the
    newest complete checkpoint's step."""
    out.mkdir()
    proc = subprocess.Popen(
        command,
        cwd=out,
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not list((out / "checkpoints").glob("step_*/manifest.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    # torchrun starts each worker in a session of its own: kill every process of the launch at once
    launch = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for process in launch:
        process.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(launch, timeout=30)
    assert not alive
    assert not (out / "rank0.json").exists(), "the run finished before it was killed"
    return int(sorted((out / "checkpoints").glob("step_*/manifest.json"))[-1].parent.name.split("_")[1])


def _result(out: Path, rank: int = 0) -> tuple[dict, dict]:
    return json.loads((out / f"rank{rank}.json").read_text()), load_file(out / f"rank{rank}.safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process unsharded; two sharded; both again in bf16; two sharded with activation
    checkpointing, killed after their first checkpoint and rerun (activation checkpointing is no
    part of a checkpoint's config: it recomputes the same values)."""
    root = tmp_path_factory.mktemp("fsdp")
    script = root / "train_fsdp.py"
    script.write_text(SCRIPT)
    _run(_command(script, root / "one", "none"), root / "one")
    _run(_command(script, root / "fsdp", "fsdp"), root / "fsdp")
    _run(_command(script, root / "one_bf16", "none", precision="bf16"), root / "one_bf16")
    _run(_command(script, root / "fsdp_bf16", "fsdp", precision="bf16"), root / "fsdp_bf16")
    killed_at = _kill_after_first_checkpoint(
        _command(script, root / "resumed", "fsdp", "ac"), root / "resumed"
    )
    _run(_command(script, root / "resumed", "fsdp", "ac"), root / "resumed")
    return root, killed_at


@pytest.mark.slow
def test_two_sharded_processes_train_the_one_process_model(runs):
    root, _ = runs
    (one, w_one), (fsdp, w_fsdp) = _result(root / "one"), _result(root / "fsdp")
    assert len(fsdp["loss_trace"]) == STEPS
    for (s1, l1), (s2, l2) in zip(one["loss_trace"], fsdp["loss_trace"]):
        assert s1 == s2 and l2 == pytest.approx(l1, rel=LOSS_RTOL)
    assert set(w_one) == set(w_fsdp)
    worst = max(float((w_one[k] - w_fsdp[k]).abs().max()) for k in w_one)
    assert worst <= WEIGHT_ATOL
    # the weights moved (a test that would pass on untrained weights proves nothing)
    assert max(float((w_one[k] - w_fsdp[k]).abs().max()) for k in w_one) < max(
        float(w_one[k].abs().max()) for k in w_one
    )
    # every process ends with the whole trained model (sampling needs it), the same on each
    _, w_rank1 = _result(root / "fsdp", 1)
    assert all(torch.equal(w_fsdp[k], w_rank1[k]) for k in w_fsdp)


def _update_difference(root: Path, a: str, b: str) -> float:
    """|w_a - w_b| / |w_a - w_initial| over all weights: how differently two runs moved the weights."""
    (_, w_a), (_, w_b) = _result(root / a), _result(root / b)
    initial = load_file(root / a / "initial.safetensors")
    apart = sum(float((w_a[k] - w_b[k]).square().sum()) for k in w_a)
    moved = sum(float((w_a[k] - initial[k]).square().sum()) for k in w_a)
    return (apart / moved) ** 0.5


@pytest.mark.slow
def test_sharded_bf16_training_agrees_with_unsharded_bf16_training(runs):
    root, _ = runs
    (one, _), (fsdp, _) = _result(root / "one_bf16"), _result(root / "fsdp_bf16")
    # the time reaches FLUX in fp32, as in unsharded training and in sampling (no input casting)
    assert one["time_dtypes"] == fsdp["time_dtypes"] == ["torch.float32"]
    assert [s for s, _ in fsdp["loss_trace"]] == [s for s, _ in one["loss_trace"]]
    worst = max(abs(l2 - l1) / abs(l1) for (_, l1), (_, l2) in zip(one["loss_trace"], fsdp["loss_trace"]))
    assert worst <= BF16_LOSS_RTOL
    bf16_vs_fp32 = _update_difference(root, "one", "one_bf16")  # what bf16 itself changes
    assert bf16_vs_fp32 > 0.01  # bf16 did round: the yardstick is not zero
    assert _update_difference(root, "one_bf16", "fsdp_bf16") <= BF16_UPDATE_VS_FP32 * bf16_vs_fp32


@pytest.mark.slow
def test_a_killed_sharded_training_resumes_from_its_shards_bit_for_bit(runs):
    # the resumed run recomputes activations (train.activation_checkpointing): bit for bit all the same
    root, killed_at = runs
    (plain, w_plain), (resumed, w_resumed) = _result(root / "fsdp"), _result(root / "resumed")
    assert resumed["resumed_from"] is not None and resumed["resumed_from"] >= killed_at
    assert [tuple(e) for e in resumed["loss_trace"]] == [tuple(e) for e in plain["loss_trace"]]
    assert all(torch.equal(w_plain[k], w_resumed[k]) for k in w_plain)


@pytest.mark.slow
def test_a_sharded_checkpoint_holds_one_shard_file_per_process(runs):
    root, _ = runs
    (step,) = sorted((root / "fsdp" / "checkpoints").glob("step_*"))
    assert step.name == f"step_{STEPS:08d}"
    assert json.loads((step / "manifest.json").read_text())["sharded"] is True
    assert sorted(p.name for p in (step / "shards").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (step / "model.safetensors").exists()  # the weights live in the shards only


def test_the_units_are_flux_blocks():
    torch.manual_seed(0)
    backbone = FluxBackbone((1, 8, 8), 3, 1, **TINY)
    names = [type(m).__name__ for m in shard_units(backbone)]
    assert names == ["FluxTransformerBlock"] * 2 + ["FluxSingleTransformerBlock"] * 2
    assert shard_units(MLPBackbone((2,), 3, 1)) == []


def test_the_sharded_twin_copies_no_storage():
    torch.manual_seed(0)
    backbone = FluxBackbone((1, 8, 8), 3, 1, **TINY)
    backbone.enable_activation_checkpointing()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    twin = _meta_twin(backbone)
    assert all(t.is_meta for t in [*twin.parameters(), *twin.buffers()])
    assert [(n, p.shape, p.requires_grad) for n, p in twin.named_parameters()] == [
        (n, p.shape, p.requires_grad) for n, p in backbone.named_parameters()
    ]
    assert twin.transformer.gradient_checkpointing  # settings travel with the structure
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())  # the original untouched
    with build_device("fsdp"):  # one process: nothing to receive, the backbone is built for real
        assert not FluxBackbone((1, 8, 8), 3, 1, **TINY).img_ids.is_meta


def test_bf16_sharding_casts_no_inputs():
    # autocast casts per operation; FSDP's default would round the time to bf16 before FLUX's 1 - t
    policy = mixed_precision_policy("bf16")
    assert (policy.param_dtype, policy.reduce_dtype, policy.cast_forward_inputs) == (
        torch.bfloat16,
        torch.float32,
        False,
    )
    assert mixed_precision_policy("no").param_dtype is None


def test_activation_checkpointing_recomputes_the_same_gradients():
    torch.manual_seed(0)
    a = FluxBackbone((1, 8, 8), 3, 1, **TINY)
    b = FluxBackbone((1, 8, 8), 3, 1, **TINY)
    b.load_state_dict(a.state_dict())
    b.enable_activation_checkpointing()
    x, t, tokens = torch.randn(4, 1, 8, 8), torch.rand(4), torch.randint(0, 3, (4, 1))
    for model in (a, b):
        model(x, t, tokens).square().mean().backward()
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))
    assert b.transformer.gradient_checkpointing and not a.transformer.gradient_checkpointing


def test_what_sharding_does_not_support_is_refused_in_one_line():
    with pytest.raises(BenchError, match="train.sharding='ddp': use one of none, fsdp"):
        TrainConfig(sharding="ddp")
    with pytest.raises(BenchError, match="set train.mixed_precision='bf16'"):
        TrainConfig(sharding="fsdp", mixed_precision="fp16")
    with pytest.raises(BenchError, match="set train.ema_decay=0"):
        TrainConfig(sharding="fsdp", ema_decay=0.999)
    with pytest.raises(BenchError, match="cannot recompute its activations"):
        MLPBackbone((2,), 3, 1).enable_activation_checkpointing()
