"""Data-parallel training on two CPU processes (gloo) through accelerate, launched by torchrun."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.trainer import rank_rows

SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    from accelerate import Accelerator
    from safetensors.torch import save_file
    from bench.backbones.mlp import MLPBackbone
    from bench.methods.fm import FlowMatching
    from bench.trainer import TrainConfig, train

    out = sys.argv[1]
    torch.manual_seed(0)
    z = torch.randn(256, 2)
    y = (z[:, 0] > 0).long()
    method = FlowMatching()
    method.setup(2)
    torch.manual_seed(1)
    backbone = MLPBackbone((2,), method.vocab_size, method.n_tokens)
    result = train(method, backbone, z, y, TrainConfig(steps=20, batch_size=64, lr=1e-2, log_every=10), seed=0)
    acc = Accelerator(cpu=True)
    rank = acc.process_index
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    json.dump({"num_processes": acc.num_processes, "loss_trace": result.loss_trace}, open(f"{out}/rank{rank}.json", "w"))
''')


def test_rank_rows_split_a_batch_into_contiguous_equal_shards():
    assert [rank_rows(8, r, 2) for r in (0, 1)] == [slice(0, 4), slice(4, 8)]
    assert rank_rows(8, 0, 1) == slice(0, 8)
    with pytest.raises(Exception, match="does not split over 3 processes"):
        rank_rows(8, 0, 3)


@pytest.mark.slow
def test_two_gloo_processes_train_the_same_weights(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    out = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["num_processes"] for i in infos] == [2, 2]
    assert infos[0]["loss_trace"] == infos[1]["loss_trace"]  # the logged loss is averaged over ranks
    w0, w1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert set(w0) == set(w1) and all(torch.equal(w0[k], w1[k]) for k in w0)
    torch.manual_seed(1)
    from bench.backbones.mlp import MLPBackbone
    from bench.methods.fm import FlowMatching
    method = FlowMatching()
    method.setup(2)
    init = MLPBackbone((2,), method.vocab_size, method.n_tokens).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in init)  # it trained
    # two shards with averaged gradients = one process on the whole batch, up to float rounding
    single = tmp_path / "single"
    single.mkdir()
    one = subprocess.run([sys.executable, str(script), str(single)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-3000:]
    assert json.loads((single / "rank0.json").read_text())["num_processes"] == 1
    w = load_file(single / "rank0.safetensors")
    assert all(torch.allclose(w[k], w0[k], atol=1e-4) for k in w)


SAMPLE_SCRIPT = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from bench.backbones.mlp import MLPBackbone
    from bench.methods.fm import FlowMatching
    from bench.sampler import SampleConfig, generate

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
''')


@pytest.mark.slow
def test_sampling_sharded_over_two_processes_gives_exactly_the_single_process_set(tmp_path):
    script = tmp_path / "sample.py"
    script.write_text(SAMPLE_SCRIPT)
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path), "2"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), str(tmp_path), "1"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    ref = load_file(tmp_path / "w1r0.safetensors")
    assert len(ref["z"]) == 27 and len(ref["paths"]) == 6
    for rank in (0, 1):
        got = load_file(tmp_path / f"w2r{rank}.safetensors")
        assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
