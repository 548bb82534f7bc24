"""The `loader` settings: how the classifier loops read lazy image arrays (bench.classify.batches).
They say how data is read, never what is computed: they feed no config hash."""

from __future__ import annotations

from bench.config.checks import Settings, setting, settings


@settings("loader")
class LoaderConfig(Settings):
    """Reading processes, read-ahead and pinned memory of the classifier loops."""

    # None: 0 on the CPU, on CUDA min(8, cores per local process - 1) (bench.classify.batches.loader_workers)
    workers: int | None = setting(None, minimum=0, none="automatic")
    prefetch_factor: int = setting(4, minimum=1)  # blocks each worker reads ahead
    pin_memory: bool = setting(True)  # page-locked host batches on CUDA (non-blocking copies)
