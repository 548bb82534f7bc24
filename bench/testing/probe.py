"""What every contract check shares: the failure it raises, and a probe that names plugin and hook.

A check walks a plugin through the hooks the pipeline calls. Anything wrong (a hook missing, a
signature that cannot take the documented arguments, an exception, a return value of the wrong
type, shape, dtype or with a NaN) becomes one `ContractFailure` whose message says which plugin,
which hook and what was expected: "method 'mine': hook `loss` returned shape (4,), expected a
scalar". A plugin the kit cannot check without the user's own files (a dataset root, a weights
folder) is skipped with the settings it needs (`unittest.SkipTest`, which pytest reports as a skip).
"""

from __future__ import annotations

import inspect
import json
import math
import unittest
from collections.abc import Callable, Sequence
from typing import NoReturn

import torch

from bench import registry
from bench.errors import BenchError


class ContractFailure(AssertionError):
    """A plugin broke its kind's contract; the message names the plugin, the hook and what was expected."""


def resolve(kind: str, plugin) -> type:
    """The plugin class: `plugin` itself, or the class registered under the name `plugin`."""
    if isinstance(plugin, str):
        reg = next(r for r in registry.REGISTRIES.values() if r.kind == kind)
        try:
            return reg.get(plugin)
        except BenchError as exc:
            raise ContractFailure(f"{kind} {plugin!r}: not registered ({exc})") from None
    if not isinstance(plugin, type):
        raise ContractFailure(
            f"check_{kind} takes the {kind} class or its registered name, got {type(plugin).__name__} "
            f"{plugin!r}"
        )
    return plugin


def plugin_name(cls: type) -> str:
    """The registered name (the registry sets `name` on the class itself), else the class name."""
    return cls.__dict__.get("name") or cls.__name__


class Probe:
    """One plugin under check: raises ContractFailure naming `<kind> '<name>'` and the hook."""

    def __init__(self, kind: str, cls: type):
        self.kind, self.cls, self.name = kind, cls, plugin_name(cls)

    @property
    def label(self) -> str:
        """How messages name the plugin: "method 'mine'"."""
        return f"{self.kind} {self.name!r}"

    def fail(self, hook: str, message: str) -> NoReturn:
        """Raise the failure of `hook`: "<kind> '<name>': hook `<hook>` <message>"."""
        raise ContractFailure(f"{self.label}: hook `{hook}` {message}")

    def expect(self, ok: bool, hook: str, message: str) -> None:
        """Fail with `message` (what the hook did wrong and what was expected) unless `ok`."""
        if not ok:
            self.fail(hook, message)

    def skip(self, reason: str) -> NoReturn:
        """Skip the check: pytest's skip under pytest, else unittest's (which pytest reports alike)."""
        try:
            import pytest
        except ImportError:  # pytest is a test extra, not a dependency of bench
            raise unittest.SkipTest(f"{self.label}: {reason}") from None
        pytest.skip(f"{self.label}: {reason}")

    def skip_unless_configured(self, plugin, check: str) -> None:
        """Skip (pytest or unittest) a plugin whose `missing_settings()` is not empty, saying what it
        needs and how to pass it to `check` (the check function's name); the hook itself must
        return a list of strings."""
        missing = self.call("missing_settings", plugin.missing_settings)
        self.expect(
            isinstance(missing, list) and all(isinstance(m, str) for m in missing),
            "missing_settings",
            f"returned {missing!r}, expected a list of strings",
        )
        if missing:
            self.skip(
                f"not checked: it needs {'; '.join(missing)}. Pass them to check it: "
                f"{check}({self.cls.__name__}, settings={{...}})"
            )

    # -- hooks present, with their documented signature ------------------------------------
    def require_hooks(
        self, hooks: dict[str, Sequence[str]], base: type | None = None, written: Sequence[str] = ()
    ) -> None:
        """Each hook exists on the class and is callable; for the `written` hooks, which a plugin
        must write itself, `base`'s own stub (it raises NotImplementedError) counts as missing."""
        for hook, params in hooks.items():
            found = getattr(self.cls, hook, None)
            if not callable(found):
                what = "missing" if found is None else f"is a {type(found).__name__}, not callable"
                raise ContractFailure(
                    f"{self.label}: hook `{hook}` {what}; expected a method `{hook}({', '.join(params)})`"
                )
            if hook in written and base is not None and _is_stub(self.cls, base, hook):
                raise ContractFailure(
                    f"{self.label}: hook `{hook}` missing (only {base.__name__}'s stub, which raises "
                    f"NotImplementedError); implement `{hook}({', '.join(params)})`"
                )

    def require_signatures(self, target, hooks: dict[str, Sequence[str]]) -> None:
        """Each hook of `target` (an instance, or the class for classmethods) accepts its documented
        positional arguments."""
        for hook, params in hooks.items():
            fn = getattr(target, hook)
            try:
                signature = inspect.signature(fn)
            except (TypeError, ValueError):  # a builtin or C callable: nothing to read
                continue
            try:
                signature.bind(*[None] * len(params))
            except TypeError:
                self.fail(
                    hook,
                    f"has the signature {hook}{signature}, expected `{hook}({', '.join(params)})`",
                )

    def construct(self, settings: dict | None):
        """An instance built with `settings` (constructor keyword arguments)."""
        try:
            return self.cls(**(settings or {}))
        except ContractFailure:
            raise
        except Exception as exc:
            given = f" with {settings}" if settings else " with no arguments"
            raise ContractFailure(
                f"{self.label}: constructing it{given} raised {type(exc).__name__}: {exc}"
            ) from exc

    def call(self, hook: str, fn: Callable, *args, **kwargs):
        """`fn(*args)`; an exception becomes a failure of `hook` that says what it raised."""
        try:
            return fn(*args, **kwargs)
        except (ContractFailure, unittest.SkipTest):
            raise
        except Exception as exc:  # pytest's skip is a BaseException: it passes through
            raise ContractFailure(f"{self.label}: hook `{hook}` raised {type(exc).__name__}: {exc}") from exc

    # -- return values ----------------------------------------------------------------------
    def tensor(self, hook: str, value, shape=None, dtype=None, floating=None, what: str = "returned") -> None:
        """`value` is a tensor of `shape` (None: any), `dtype` (or floating point), without NaN or inf."""
        self.expect(
            isinstance(value, torch.Tensor), hook, f"{what} a {type(value).__name__}, expected a torch.Tensor"
        )
        if shape is not None:
            want = "a scalar" if tuple(shape) == () else f"shape {tuple(shape)}"
            self.expect(
                tuple(value.shape) == tuple(shape),
                hook,
                f"{what} shape {tuple(value.shape)}, expected {want}",
            )
        if dtype is not None:
            self.expect(value.dtype == dtype, hook, f"{what} dtype {value.dtype}, expected {dtype}")
        if floating:
            self.expect(
                value.is_floating_point(), hook, f"{what} dtype {value.dtype}, expected a floating dtype"
            )
        if value.is_floating_point() or value.is_complex():
            self.expect(
                bool(torch.isfinite(value).all()),
                hook,
                f"{what} NaN or infinite values, expected finite ones",
            )

    def labels(self, hook: str, value, n: int, high: int, what: str = "returned") -> None:
        """`value` is an int64 (n,) tensor of indices in [0, high)."""
        self.tensor(hook, value, shape=(n,), dtype=torch.int64, what=what)
        if n:
            lo, hi = int(value.min()), int(value.max())
            self.expect(
                lo >= 0 and hi < high,
                hook,
                f"{what} values in [{lo}, {hi}], expected them in [0, {high - 1}]",
            )

    def jsonable(self, hook: str, value, keys: Sequence[str] = ()) -> None:
        """`value` is a dict that JSON can write (records store it) holding `keys`."""
        self.expect(isinstance(value, dict), hook, f"returned a {type(value).__name__}, expected a dict")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            self.fail(hook, f"returned a dict JSON cannot write ({exc}), expected plain JSON values")
        missing = [k for k in keys if k not in value]
        self.expect(not missing, hook, f"returned a dict without {missing}, expected those keys")

    def finite_number(self, hook: str, key: str, value) -> float:
        """`value` as a float: a real number (Python, numpy or a one-value tensor), finite."""
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        is_number = (
            isinstance(value, (int, float)) or type(value).__module__ == "numpy" and hasattr(value, "dtype")
        )
        if isinstance(value, bool) or not is_number:
            self.fail(hook, f"returned {key!r} = {value!r} (a {type(value).__name__}), expected a float")
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(hook, f"returned {key!r} = {value!r} (a {type(value).__name__}), expected a float")
        self.expect(math.isfinite(number), hook, f"returned {key!r} = {number}, expected a finite float")
        return number


def _is_stub(cls: type, base: type, hook: str) -> bool:
    """True when `cls` inherits `hook` unchanged from `base` (whose version raises NotImplementedError)."""
    if not issubclass(cls, base):
        return False
    raw = inspect.getattr_static(cls, hook, None)
    return raw is not None and raw is inspect.getattr_static(base, hook, None)
