"""Sharded training (`train.sharding='fsdp'`): weights, gradients and AdamW state split across
the processes of a cell, for backbones that outgrow one device (the FLUX.1-size preset).

The engine is PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`), the one accelerate's FSDP
plugin wraps (`fsdp_version=2`). bench calls it directly because accelerate applies its plugin only
to GPU processes (a CPU launch stays plain multi-CPU data parallel), so through accelerate the
sharded path could not be tested without a GPU; called directly, CPU (gloo) and GPU (NCCL)
processes run the same code. Each block a diffusers model names in `_no_split_modules` (FLUX's
double- and single-stream blocks) is one FSDP unit, gathered just before it runs and freed after;
the rest of the backbone is the root unit.

As FSDP's users do it:
- the sharded model is built on the meta device (no storage) and its shards are filled from rank
  0's backbone, one tensor at a time; only rank 0 builds the seeded full model (the other ranks
  build theirs on the meta device, `build_device`), so the trained weights are those of one process
  trained from the same seed;
- under `train.mixed_precision='bf16'` the units gather bf16 weights and reduce gradients in fp32
  over fp32 master shards, and cast nothing they are given (`cast_forward_inputs=False`): autocast
  casts per operation, exactly as in unsharded training, so the time `t` reaches the backbone in
  fp32 (FSDP's default would round it to bf16 before FLUX's `1 - t` and timestep embedding, which
  sampling computes in fp32);
- at the end the full weights are gathered into the plain backbone one tensor at a time, through
  the CPU (`gather_into`): every rank gets them, since every rank samples its share of batches;
- checkpoints are sharded (torch.distributed.checkpoint: one file per process and a metadata file)
  and written in the background (`AsyncShardWriter`): training stops only while this process's
  shards are copied to host memory.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

SHARDS_DIR = "shards"  # inside a checkpoint folder: the DCP files of the weights and AdamW state


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules that become their own FSDP unit: instances of the block classes that a
    diffusers model lists in `_no_split_modules` (outermost first); none for other backbones."""
    names = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or ())}
    return [m for m in model.modules() if type(m).__name__ in names]


def receives_weights(sharding: str) -> bool:
    """Whether this process takes its initial weights from rank 0 (a rank other than 0 of a sharded
    launch) and so may build its backbone without them."""
    from bench.runtime import distributed

    return sharding == "fsdp" and distributed.world() > 1 and distributed.rank() != 0


def build_device(sharding: str):
    """The context to construct the backbone in: the meta device (no memory, no random draws) on
    the ranks that receive rank 0's weights (`receives_weights`), the default elsewhere."""
    return torch.device("meta") if receives_weights(sharding) else contextlib.nullcontext()


def mixed_precision_policy(mixed_precision: str):
    """FSDP2's policy: bf16 gathers over fp32 master shards with fp32 gradient reduction, and no
    casting of forward inputs (autocast casts per operation, as unsharded training does)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if mixed_precision == "bf16":
        return MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False
        )
    return MixedPrecisionPolicy(cast_forward_inputs=False)


def shard(backbone: nn.Module, device: torch.device, mixed_precision: str) -> nn.Module:
    """A sharded twin of `backbone` on `device`, holding rank 0's weights (a collective).

    The twin is built on the meta device and sharded before it gets any storage, so no process
    holds a second full copy; `backbone` itself may be on the meta device on ranks other than 0.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # FLUX's single-stream blocks return views (a split of one tensor), which FSDP2 warns about in
    # case a later in-place op drops its backward hook; diffusers does none, and the sharded training
    # matches the unsharded one (tests/pipeline/test_fsdp.py), so the warning would only alarm the user
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    model = _meta_twin(backbone)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = mixed_precision_policy(mixed_precision)
    for unit in reversed(shard_units(model)):  # innermost first, as FSDP2 requires
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    model.to_empty(device=device)
    _fill_from_first(model, backbone, device)
    _share_rng()
    return model


def _meta_twin(module: nn.Module) -> nn.Module:
    """A deep copy of `module` whose parameters and buffers are on the meta device: the structure
    (and settings such as activation checkpointing) without copying any storage."""
    memo = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        empty = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = (
            nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty
        )
    return copy.deepcopy(module, memo)


@torch.no_grad()
def _fill_from_first(model: nn.Module, backbone: nn.Module, device: torch.device) -> None:
    """Copy rank 0's `backbone` into the sharded `model`: each parameter scattered to its shards,
    each buffer broadcast whole (FSDP shards no buffers), one tensor on the device at a time."""
    import torch.distributed as dist
    from torch.distributed.tensor import distribute_tensor

    first = dist.get_rank() == 0
    params, buffers = dict(backbone.named_parameters()), dict(backbone.named_buffers())
    for name, param in model.named_parameters():
        full = (
            params[name].to(device) if first else torch.empty(param.shape, dtype=param.dtype, device=device)
        )
        param.to_local().copy_(distribute_tensor(full, param.device_mesh, param.placements).to_local())
    for name, buffer in model.named_buffers():
        if first:
            buffer.copy_(buffers[name])
        dist.broadcast(buffer, src=0)


def _share_rng() -> None:
    """Give every rank rank 0's CPU generator state: ranks that built their backbone on the meta
    device drew no random numbers, and every rank must continue with the same ones."""
    import torch.distributed as dist

    state = torch.get_rng_state().to(_backend_device())
    dist.broadcast(state, src=0)
    torch.set_rng_state(state.cpu())


@torch.no_grad()
def gather_into(model: nn.Module, backbone: nn.Module) -> None:
    """Copy the sharded `model`'s full weights into the plain `backbone` on the CPU of every
    process (a collective), one parameter at a time: no process ever holds a second full copy on
    its device. A `backbone` built on the meta device gets its storage here."""
    if any(t.is_meta for t in [*backbone.parameters(), *backbone.buffers()]):
        backbone.to_empty(device="cpu")
    params, buffers = dict(backbone.named_parameters()), dict(backbone.named_buffers())
    for name, param in model.named_parameters():
        params[name].copy_(param.full_tensor())  # every rank samples, so every rank needs the weights
    for name, buffer in model.named_buffers():
        buffers[name].copy_(buffer)


def local_weights_finite(model: nn.Module) -> bool:
    """Whether this process's shards of the weights are all finite (no communication)."""
    return all(bool(torch.isfinite(_local(p)).all()) for p in model.parameters() if p.is_floating_point())


def all_true(flag: bool) -> bool:
    """Whether `flag` holds on every process (a collective)."""
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_backend_device())
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def _backend_device() -> str:
    """Where the default process group's collectives take their tensors."""
    import torch.distributed as dist

    return "cuda" if dist.get_backend() == "nccl" else "cpu"


class AsyncShardWriter:
    """Writes the shards of the weights and AdamW state in the background
    (`torch.distributed.checkpoint.async_save`).

    `start` blocks only while this process's shards are copied to host memory (pinned and reused
    across checkpoints on a GPU); a background thread writes them, and rank 0's thread then calls
    `publish(error)` (so the folder appears on disk the moment all shards are written, with no
    collective on the training's critical path). One write at a time: `start` first waits for the
    previous one. The background collectives run on a gloo group of their own: DCP needs a CPU
    group, and a shared one would interleave them with training's collectives.
    """

    def __init__(self):
        import torch.distributed as dist
        from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

        self.group = dist.new_group(backend="gloo")  # a collective: every rank constructs one
        cuda = torch.cuda.is_available()
        self.stager = DefaultStager(
            StagingOptions(
                use_pinned_memory=cuda,
                use_shared_memory=False,
                use_async_staging=False,
                use_non_blocking_copy=cuda,
            )
        )
        self._done: threading.Event | None = None
        self._error: BaseException | None = None

    def start(
        self,
        folder: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        publish: Callable[[BaseException | None], None],
    ) -> None:
        """Stage this process's shards and write them under `folder`/shards in the background (a
        collective); `publish(None)` follows on success, `publish(error)` on failure."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        self.wait()
        weights, optim = get_state_dict(model, optimizer)
        done = threading.Event()

        def finish(future) -> None:  # runs in the writer's thread
            try:
                error = future.exception()
                publish(error)
            except BaseException as exc:  # a failed publish is a failed checkpoint too
                error = exc
            self._error = error
            done.set()

        future = dcp.async_save(
            {"model": weights, "optim": optim},
            checkpoint_id=str(Path(folder) / SHARDS_DIR),
            process_group=self.group,
            async_stager=self.stager,
        )
        self._done = done
        future.add_done_callback(finish)

    def wait(self) -> None:
        """Block until the write in flight (if any) is written and published; raise its error."""
        if self._done is not None:
            self._done.wait()
            self._done, error, self._error = None, self._error, None
            if error is not None:
                raise error

    def close(self) -> None:
        """Finish the write in flight and free the staging memory."""
        try:
            self.wait()
        finally:
            self.stager.close()


def load_shards(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Restore what `AsyncShardWriter` wrote into `model` and `optimizer` (a collective). A missing
    or damaged shard, or a weight that is not finite, raises on every process
    (torch.distributed.checkpoint shares its errors) and leaves `model` and `optimizer` untouched."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.utils._pytree import tree_map_only

    # read into copies: a shard that fails to load or holds NaN leaves the model as it was
    state = tree_map_only(
        torch.Tensor,
        lambda t: t.detach().clone(),
        dict(zip(("model", "optim"), get_state_dict(model, optimizer))),
    )
    dcp.load(state, checkpoint_id=str(Path(folder) / SHARDS_DIR))
    finite = all(
        bool(torch.isfinite(_local(w)).all()) for w in state["model"].values() if w.is_floating_point()
    )
    if not all_true(finite):
        raise ValueError("a weight shard is NaN or infinite")
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a (possibly distributed) tensor."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor
