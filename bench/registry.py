"""One Registry class for every plugin kind, fed by decorators and by entry points.

Built-in plugins are advertised through the same entry-point groups as third-party ones
(see pyproject.toml), so listing names needs only package metadata, never torch. A plugin
module is imported the first time its name is looked up; a plugin that fails to import is
logged and skipped instead of taking the whole harness down.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from importlib import metadata

from bench.errors import BenchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin name comes from, known without importing the plugin."""

    name: str
    target: str  # "module:attr" of the entry point, or the defining module
    distribution: str  # "bench 0.1.0", "my-plugin 1.2", or "(registered in-process)"


class Registry:
    """Name -> plugin class for one kind (methods, datasets, ...), with lazy entry points."""

    def __init__(self, kind: str, group: str):
        self.kind = kind  # singular, for messages: "method"
        self.group = group  # entry-point group: "bench.methods"
        self.gin_module = group.split(".")[-1]  # gin scope module: "methods"
        self._classes: dict[str, type] = {}
        self._in_process: dict[str, PluginInfo] = {}
        self._broken: dict[str, str] = {}

    # -- registration -------------------------------------------------------------------
    def register(self, name: str):
        """Class decorator: register under `name` and make the constructor gin-configurable."""

        def decorator(cls: type) -> type:
            import gin

            cls = gin.configurable(name, module=self.gin_module)(cls)
            cls.name = name
            self._classes[name] = cls
            if name not in self._entry_points():
                self._in_process[name] = PluginInfo(
                    name, cls.__module__ + ":" + cls.__qualname__, "(registered in-process)"
                )
            return cls

        return decorator

    # -- discovery ----------------------------------------------------------------------
    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        found: dict[str, metadata.EntryPoint] = {}
        for ep in metadata.entry_points(group=self.group):
            if ep.name in found and found[ep.name].value != ep.value:
                log.warning("%s %r advertised twice; using %s", self.kind, ep.name, found[ep.name].value)
                continue
            found.setdefault(ep.name, ep)
        return found

    def infos(self) -> list[PluginInfo]:
        """Every known plugin, sorted by name, from metadata only (imports nothing)."""
        infos = dict(self._in_process)
        for name, ep in self._entry_points().items():
            dist = ep.dist
            where = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "(unknown)"
            infos[name] = PluginInfo(name, ep.value, where)
        return [infos[n] for n in sorted(infos)]

    def origin(self, name: str) -> str:
        """Where plugin `name` comes from: its distribution and version ("my-plugin 1.2"), or
        "(registered in-process)". Records store it for every plugin a cell used."""
        info = next((i for i in self.infos() if i.name == name), None)
        return info.distribution if info is not None else "(unknown)"

    def names(self) -> list[str]:
        """Sorted plugin names, without importing any plugin."""
        return [info.name for info in self.infos()]

    # -- lookup -------------------------------------------------------------------------
    def get(self, name: str) -> type:
        """The class registered as `name`; imports its entry point on first use."""
        if not isinstance(name, str):  # e.g. a gin list where one name belongs
            raise BenchError(
                f"a {self.kind} is named by one string, got {name!r} "
                f"(known: {', '.join(self.names())}; see `bench ls`)"
            )
        if name in self._classes:
            return self._classes[name]
        eps = self._entry_points()
        if name in eps and name not in self._broken:
            self._load(name, eps[name])
            if name in self._classes:
                return self._classes[name]
        if name in self._broken:
            raise BenchError(f"{self.kind} {name!r} failed to load: {self._broken[name]}")
        raise BenchError(self._unknown_message(name))

    def load_all(self) -> None:
        """Import every advertised plugin so its gin configurable exists; skip broken ones."""
        for name, ep in self._entry_points().items():
            if name not in self._classes and name not in self._broken:
                self._load(name, ep)

    def _load(self, name: str, ep: metadata.EntryPoint) -> None:
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break bench
            self._broken[name] = f"{type(exc).__name__}: {exc}"
            log.warning("skipping %s plugin %r (%s): %s", self.kind, name, ep.value, self._broken[name])
            return
        if name not in self._classes and isinstance(obj, type):
            self.register(name)(obj)  # entry point names a class that carries no decorator
        if name not in self._classes:
            self._broken[name] = f"entry point {ep.value} registered no {self.kind} named {name!r}"
            log.warning("skipping %s plugin %r: %s", self.kind, name, self._broken[name])

    def _unknown_message(self, name: str) -> str:
        names = [n for n in self.names() if n not in self._broken]
        # Always offer the closest name: a wrong guess costs nothing, no guess costs a lookup.
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.0)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(names)}; see `bench ls`)"


methods = Registry("method", "bench.methods")
datasets = Registry("dataset", "bench.datasets")
evaluators = Registry("evaluator", "bench.evaluators")
backbones = Registry("backbone", "bench.backbones")
encoders = Registry("encoder", "bench.encoders")
remedies = Registry("remedy", "bench.remedies")

REGISTRIES = {
    r.group.split(".")[-1]: r for r in (methods, datasets, evaluators, backbones, encoders, remedies)
}

register_method = methods.register
register_dataset = datasets.register
register_evaluator = evaluators.register
register_backbone = backbones.register
register_encoder = encoders.register
register_remedy = remedies.register
