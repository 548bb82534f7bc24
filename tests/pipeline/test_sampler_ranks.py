"""sample.batch_size=None on several processes: every rank cuts the plan into the same batches."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from bench.backbones.mlp import MLPBackbone
    from bench.methods.fm import FlowMatching
    from bench.config.sample import SampleConfig
    from bench.pipeline import sampler

    out, world = sys.argv[1], int(sys.argv[2])
    rank = 0
    if world > 1:
        dist.init_process_group("gloo")
        rank = dist.get_rank()
    # as if each rank had other free memory: rank 0 would pick batches of 4, rank 1 of 7
    sampler.sampling_batch = lambda backbone, cfg, device, n, world: 4 + 3 * rank
    method = FlowMatching()
    method.setup(3)
    torch.manual_seed(1)
    backbone = MLPBackbone((2,), method.vocab_size, method.n_tokens)
    cfg = SampleConfig(nfe=4, batch_size=None)
    res = sampler.generate(method, backbone, [13, 5, 9], (2,), seed=3, cfg=cfg, rank=rank, world=world)
    save_file({k: v.contiguous() for k, v in res.items()}, f"{out}/w{world}r{rank}.safetensors")
    if world > 1:  # leave as bench's launched ranks do: gloo's threads can abort the interpreter's teardown
        import os
        dist.barrier()
        dist.destroy_process_group()
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(0)
""")
ENV = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.slow
def test_ranks_agree_on_the_smallest_batch_and_give_the_single_process_set(tmp_path):
    script = tmp_path / "sample.py"
    script.write_text(SCRIPT)
    two = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path), "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    ref = load_file(tmp_path / "w1r0.safetensors")
    assert len(ref["z"]) == 27
    for rank in (0, 1):
        got = load_file(tmp_path / f"w2r{rank}.safetensors")
        assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
