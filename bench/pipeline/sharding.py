"""Sharded training (`train.sharding='fsdp'`): weights, gradients and AdamW state split across
the processes of a cell, for backbones that outgrow one device (the FLUX.1-size preset).

The engine is PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`), the one accelerate's FSDP
plugin wraps (`fsdp_version=2`). bench calls it directly because accelerate applies its plugin only
to GPU processes (a CPU launch stays plain multi-CPU data parallel), so through accelerate the
sharded path could not be tested without a GPU; called directly, CPU (gloo) and GPU (NCCL)
processes run the same code. Each block a diffusers model names in `_no_split_modules` (FLUX's
double- and single-stream blocks) is one FSDP unit, gathered just before it runs and freed after;
the rest of the backbone is the root unit. Under `train.mixed_precision='bf16'` the units gather
bf16 weights and reduce gradients in fp32, over fp32 master shards.

The trained model is a sharded copy of the backbone; at the end its full weights are gathered
into the original, plain backbone on every process (sampling shards batches, not weights), which
`save_pretrained` writes as usual. Checkpoints are sharded (torch.distributed.checkpoint: one file
per process and a metadata file), so resuming never needs the whole model on one process.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

SHARDINGS = ("none", "fsdp")
SHARDS_DIR = "shards"  # inside a checkpoint folder: the DCP files of the weights and AdamW state


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules that become their own FSDP unit: instances of the block classes that a
    diffusers model lists in `_no_split_modules` (outermost first); none for other backbones."""
    names = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or ())}
    return [m for m in model.modules() if type(m).__name__ in names]


def shard(backbone: nn.Module, device: torch.device, mixed_precision: str) -> nn.Module:
    """A copy of `backbone`, sharded across the launched processes and moved to `device`."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # FLUX's single-stream blocks return views (a split of one tensor), which FSDP2 warns about in
    # case a later in-place op drops its backward hook; diffusers does none, and the sharded training
    # matches the unsharded one (tests/test_fsdp.py), so the warning would only alarm the user
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    model = copy.deepcopy(backbone)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if mixed_precision == "bf16" else MixedPrecisionPolicy()
    for unit in reversed(shard_units(model)):  # innermost first, as FSDP2 requires
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model.to(device)


def full_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict of a sharded model, gathered on every process, on the CPU.
    A collective: every process calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().cpu() for k, v in weights.items()}


def local_weights_finite(model: nn.Module) -> bool:
    """Whether this process's shards of the weights are all finite (no communication)."""
    return all(bool(torch.isfinite(_local(p)).all()) for p in model.parameters() if p.is_floating_point())


def all_true(flag: bool) -> bool:
    """Whether `flag` holds on every process (a collective)."""
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int64)
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = value.to(backend_device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def save_shards(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write this process's shards of the weights and AdamW state under `folder`/shards (a
    collective: every process writes its own file; the first also writes the metadata)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, optim = get_state_dict(model, optimizer)
    dcp.save({"model": weights, "optim": optim}, checkpoint_id=str(Path(folder) / SHARDS_DIR))


def load_shards(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Restore what `save_shards` wrote into `model` and `optimizer` (a collective). A missing or
    damaged shard, or a weight that is not finite, raises on every process (torch.distributed.checkpoint
    shares its errors) and leaves `model` and `optimizer` untouched."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from torch.utils._pytree import tree_map_only

    # read into copies: a shard that fails to load or holds NaN leaves the model as it was
    state = tree_map_only(torch.Tensor, lambda t: t.detach().clone(), dict(zip(("model", "optim"),
                                                                              get_state_dict(model, optimizer))))
    dcp.load(state, checkpoint_id=str(Path(folder) / SHARDS_DIR))
    finite = all(bool(torch.isfinite(_local(w)).all()) for w in state["model"].values() if w.is_floating_point())
    if not all_true(finite):
        raise ValueError("a weight shard is NaN or infinite")
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a (possibly distributed) tensor."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor
