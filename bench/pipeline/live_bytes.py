"""Live tensor memory of traced code, counted storage by storage (a TorchDispatchMode).

Run under `FakeTensorMode`, nothing is allocated: every operator still returns tensors of the
right shapes and dtypes, so the bytes of the storages it creates, and the moment each one is
freed, are those of a real run (minus what a kernel allocates inside itself and frees before it
returns, e.g. a matmul's workspace, and the allocator's rounding and fragmentation).

Each storage is recorded once, when the first operator returns a tensor on it, with the event
counter at its birth and at its death (a weakref finaliser on the storage object, which PyTorch
keeps alive exactly as long as the storage itself). Classifying the storages afterwards
(parameters, gradients, ...) lets one sweep say what was live at the peak and how large any one
class grew (`LiveBytes.sweep`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


@dataclass
class Storage:
    """One storage: its bytes, the events of its birth and death, what made it."""

    nbytes: int
    born: int
    died: int | None = None
    origin: str = "op"  # "op": an operator's output; "cast": `_to_copy` of a tracked `source` storage
    source: Storage | None = None


class LiveBytes(TorchDispatchMode):
    """Records the storages operators create and when they die; `adopt` registers tensors that
    existed before (parameters, optimiser state)."""

    def __init__(self):
        super().__init__()
        self.clock = 0
        self.storages: dict[int, Storage] = {}  # id of the storage object -> its record, while alive
        self.retired: list[Storage] = []  # records of the storages that died

    def key(self, tensor: torch.Tensor) -> int:
        return id(tensor.untyped_storage())

    def adopt(self, tensors: Iterable[torch.Tensor]) -> None:
        """Count tensors that already exist, as born now."""
        for t in tensors:
            self._track(t, "op", None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.clock += 1
        source = None
        if func is torch.ops.aten._to_copy.default and self.key(args[0]) in self.storages:
            source = self.storages[self.key(args[0])]  # a cast copy, e.g. autocast's bf16 copy of a weight
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, "cast" if source is not None else "op", source)
        return out

    def _track(self, tensor: torch.Tensor, origin: str, source: Storage | None) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self.storages and self.storages[key].died is None:
            return  # a view or an in-place result: the storage is already counted
        self.storages[key] = record = Storage(storage.nbytes(), self.clock, origin=origin, source=source)
        weakref.finalize(storage, self._free, key, record)

    def _free(self, key: int, record: Storage) -> None:
        record.died = self.clock
        if self.storages.get(key) is record:  # the id may be reused by a later storage
            del self.storages[key]
            self.retired.append(record)

    def records(self) -> list[Storage]:
        """Every storage seen, dead or alive."""
        return self.retired + list(self.storages.values())

    def sweep(
        self, classify: Callable[[Storage], str], start: int = 0, end: int | None = None
    ) -> tuple[int, dict[str, int], dict[str, int]]:
        """(peak bytes, bytes by class at the peak, largest bytes each class reached) over the events
        in [start, end)."""
        end = self.clock + 1 if end is None else end
        events = []
        for r in self.records():
            died = end if r.died is None else r.died
            if r.born < end and died > start:
                kind = classify(r)
                events.append((max(r.born, start), 0, r.nbytes, kind))
                events.append((died, 1, r.nbytes, kind))
        # an operator's outputs are born before its inputs can die (both carry its event number)
        events.sort(key=lambda e: (e[0], e[1]))
        live, by_kind, most = 0, {}, {}
        peak, at_peak = -1, {}
        for _, death, nbytes, kind in events:
            sign = -1 if death else 1
            live += sign * nbytes
            by_kind[kind] = by_kind.get(kind, 0) + sign * nbytes
            most[kind] = max(most.get(kind, 0), by_kind[kind])
            if live > peak:
                peak, at_peak = live, dict(by_kind)
        return max(peak, 0), at_peak, most
