"""Data-parallel training on two CPU processes (gloo) through accelerate, launched by torchrun."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.backbones.mlp import MLPBackbone
from bench.errors import BenchError
from bench.methods.fm import FlowMatching
from bench.pipeline.trainer import micro_batch_rows

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from accelerate import Accelerator
    from safetensors.torch import save_file
    from bench.backbones.mlp import MLPBackbone
    from bench.methods.fm import FlowMatching
    from bench.config.train import TrainConfig
    from bench.pipeline.trainer import train

    out, micro_batches = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    z = torch.randn(256, 2)
    y = (z[:, 0] > 0).long()
    method = FlowMatching()
    method.setup(2)
    torch.manual_seed(1)
    backbone = MLPBackbone((2,), method.vocab_size, method.n_tokens)
    cfg = TrainConfig(steps=20, batch_size=64, lr=1e-2, log_every=10, micro_batches=micro_batches)
    result = train(method, backbone, z, y, cfg, seed=0)
    acc = Accelerator(cpu=True)
    rank = acc.process_index
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    record = {"num_processes": acc.num_processes, "loss_trace": result.loss_trace}
    json.dump(record, open(f"{out}/rank{rank}.json", "w"))
""")
ENV = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_micro_batches_split_a_batch_into_contiguous_equal_parts_shared_by_rank():
    assert micro_batch_rows(8, 1, 0, 1) == [(0, slice(0, 8))]
    assert micro_batch_rows(8, 2, 0, 1) == [(0, slice(0, 4)), (1, slice(4, 8))]
    assert [micro_batch_rows(8, 2, r, 2) for r in (0, 1)] == [[(0, slice(0, 4))], [(1, slice(4, 8))]]
    assert micro_batch_rows(12, 4, 1, 2) == [(2, slice(6, 9)), (3, slice(9, 12))]
    with pytest.raises(BenchError, match="set train.micro_batches to a multiple of 2"):
        micro_batch_rows(8, 1, 0, 2)
    with pytest.raises(BenchError, match="does not split into train.micro_batches=3"):
        micro_batch_rows(8, 3, 0, 1)


def _run_script(script, out: Path, micro_batches: int, processes: int) -> tuple[list, list]:
    out.mkdir()
    launch = (
        [str(TORCHRUN), "--standalone", "--nproc_per_node", str(processes)]
        if processes > 1
        else [sys.executable]
    )
    res = subprocess.run(
        [*launch, str(script), str(out), str(micro_batches)],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
    return infos, [load_file(out / f"rank{r}.safetensors") for r in range(processes)]


def _equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_gloo_processes_train_the_one_process_weights_bit_for_bit(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    infos, (w0, w1) = _run_script(script, tmp_path / "two", micro_batches=2, processes=2)
    assert [i["num_processes"] for i in infos] == [2, 2]
    assert infos[0]["loss_trace"] == infos[1]["loss_trace"]  # the logged loss is averaged over ranks
    assert _equal(w0, w1)
    torch.manual_seed(1)
    method = FlowMatching()
    method.setup(2)
    init = MLPBackbone((2,), method.vocab_size, method.n_tokens).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in init)  # it trained
    # one process accumulating the same two micro-batches: DDP's (g0 + g1) / 2 is g0/2 + g1/2 exactly
    (one,), (w,) = _run_script(script, tmp_path / "one", micro_batches=2, processes=1)
    assert one["num_processes"] == 1 and one["loss_trace"] == infos[0]["loss_trace"]
    assert _equal(w, w0)


SAMPLE_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from bench.backbones.mlp import MLPBackbone
    from bench.methods.fm import FlowMatching
    from bench.config.sample import SampleConfig
    from bench.pipeline.sampler import generate

    out, world = sys.argv[1], int(sys.argv[2])
    rank = 0
    if world > 1:
        dist.init_process_group("gloo")
        rank = dist.get_rank()
    method = FlowMatching()
    method.setup(3)
    torch.manual_seed(1)
    backbone = MLPBackbone((2,), method.vocab_size, method.n_tokens)
    cfg = SampleConfig(nfe=4, batch_size=8, keep_paths=2)
    res = generate(method, backbone, [13, 5, 9], (2,), seed=3, cfg=cfg, rank=rank, world=world)
    save_file({k: v.contiguous() for k, v in res.items()}, f"{out}/w{world}r{rank}.safetensors")
    if world > 1:  # gloo's threads outliving the interpreter abort it ("terminate called ...") at times
        dist.destroy_process_group()
""")


@pytest.mark.slow
def test_sampling_sharded_over_two_processes_gives_exactly_the_single_process_set(tmp_path):
    script = tmp_path / "sample.py"
    script.write_text(SAMPLE_SCRIPT)
    env = ENV
    two = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path), "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    ref = load_file(tmp_path / "w1r0.safetensors")
    assert len(ref["z"]) == 27 and len(ref["paths"]) == 6
    for rank in (0, 1):
        got = load_file(tmp_path / f"w2r{rank}.safetensors")
        assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
