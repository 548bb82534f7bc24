"""Checks of user settings, shared so every plugin and setting means the same by "an integer".

A settings dataclass declares its checks beside its fields and validates them on construction:

    @settings("train", wording=USE)
    class TrainConfig(Settings):
        steps: int = setting(2000, minimum=1)         # train.steps='abc': use an integer >= 1
        lr: float = setting(1e-3, above=0)            # train.lr=0: use a finite number > 0
        mixed_precision: str = setting("no", choices=("no", "fp16", "bf16"))

The type comes from the annotation (int, float, bool, str, dict, Sequence[str], each optionally
Optional[...] to accept None), the rest from `setting(...)`; a field declared with a plain default
is not checked. Each failure is one line naming the gin parameter, in the class's `wording`.
Checks that tie several fields together stay hand-written in the class's __post_init__ (after
`super().__post_init__()`), through `require`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import gin
from bench.errors import BenchError

# the two wordings of a failed check ({key}: scope.name, {value}: the value's repr, {what}: what it
# takes): MUST, the default, as the plugins word their own checks; USE, the wording the train, sample,
# source, budget, generative and pipeline settings have always printed (docs/bad-inputs.md shows them)
MUST = "{key} must be {what}, got {value}"
USE = "{key}={value}: use {what}"


def is_int(value) -> bool:
    """An integer setting; bool is excluded although Python counts it as one."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A finite real setting (NaN would pass every range comparison's negation)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def require(checks: Iterable[tuple[bool, str]]) -> None:
    """Raise BenchError with the message of the first (condition, message) pair that is false."""
    for ok, message in checks:
        if not ok:
            raise BenchError(message)


def _names(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


# annotation -> (test, what a value of it is called)
_KINDS: dict = {
    int: (is_int, "an integer"),
    float: (is_real, "a finite number"),
    bool: (lambda v: isinstance(v, bool), "True or False"),
    str: (lambda v: isinstance(v, str), "a string"),
    dict: (lambda v: isinstance(v, dict), "a dict"),
    "names": (_names, "a list of names"),
}


@dataclasses.dataclass(frozen=True)
class Check:
    """What one field accepts: its type (from the annotation), a range or a set of choices.

    minimum / maximum bound it inclusively, above / below exclusively; `what` replaces the
    generated description, `note` is added to it in parentheses, `none` says what None means
    (for an Optional field); `message` replaces the class's wording for this field ({key}, {value},
    {what} and {default}, the field's default, as in the wording).
    """

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple | None = None
    what: str | None = None
    note: str | None = None
    none: str | None = None
    message: str | None = None

    def accepts(self, value, test: Callable[[Any], bool], optional: bool) -> bool:
        """Whether `value` passes: None where optional, else a choice, or of the type and in range."""
        if value is None:
            return optional
        if self.choices is not None:
            return value in self.choices
        if not test(value):
            return False
        low = (self.minimum is None or value >= self.minimum) and (self.above is None or value > self.above)
        high = (self.maximum is None or value <= self.maximum) and (self.below is None or value < self.below)
        return low and high

    def describe(self, kind: str, optional: bool) -> str:
        """What the field takes, in words: 'an integer >= 1', 'one of no, fp16, bf16', ..."""
        text = self.what or (
            f"one of {', '.join(map(str, self.choices))}"
            if self.choices is not None
            else f"{kind}{self._range()}"
        )
        if self.note:
            text += f" ({self.note})"
        if optional and self.none:
            text += f", or None ({self.none})"
        return text

    def _range(self) -> str:
        low = (">=", self.minimum) if self.minimum is not None else (">", self.above)
        high = ("<=", self.maximum) if self.maximum is not None else ("<", self.below)
        if low[1] is not None and high[1] is not None:
            left, right = "[" if low[0] == ">=" else "(", "]" if high[0] == "<=" else ")"
            return f" in {left}{low[1]:g}, {high[1]:g}{right}"
        bound = low if low[1] is not None else high
        return f" {bound[0]} {bound[1]:g}" if bound[1] is not None else ""


def setting(default=dataclasses.MISSING, *, factory=dataclasses.MISSING, **check) -> Any:
    """A dataclass field with its check (the keywords of Check): `steps: int = setting(2000, minimum=1)`."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"check": Check(**check)})


def _kind(hint) -> tuple[Callable[[Any], bool], str, bool]:
    """(test, name, optional) of an annotation: Optional[X] accepts None, X is one of _KINDS."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        rest = tuple(a for a in args if a is not type(None))
        hint = rest[0] if len(rest) == 1 else rest  # several types (int | str | None): not a known kind
    if typing.get_origin(hint) is collections.abc.Sequence and typing.get_args(hint) == (str,):
        hint = "names"
    if hint not in _KINDS:
        raise TypeError(
            f"a checked setting must be annotated with one of int, float, bool, str, dict, "
            f"Sequence[str] (optionally Optional), not {hint!r}"
        )
    return (*_KINDS[hint], optional)


class Settings:
    """Base of the settings dataclasses: __post_init__ checks every field declared with `setting`."""

    scope = ""  # the gin name, set by the `settings` decorator
    wording = MUST
    _checks: tuple = ()

    def __post_init__(self) -> None:
        for name, test, kind, optional, check in self._checks:
            value = getattr(self, name)
            if not check.accepts(value, test, optional):
                default = getattr(type(self), name, None)
                raise BenchError(
                    (check.message or self.wording).format(
                        key=f"{self.scope}.{name}",
                        value=repr(value),
                        what=check.describe(kind, optional),
                        default=default,
                    )
                )

    def check(self):
        """Self, checked again (after a field was changed in place)."""
        self.__post_init__()
        return self


def settings(name: str, wording: str | None = None, frozen: bool = False):
    """Class decorator: a Settings subclass as a dataclass, gin-configurable as `name`, whose
    fields declared with `setting(...)` are checked on construction."""

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=frozen)(cls)
        hints = typing.get_type_hints(cls)
        cls.scope = name
        if wording is not None:
            cls.wording = wording
        cls._checks = tuple(
            (f.name, *_kind(hints[f.name]), f.metadata["check"])
            for f in dataclasses.fields(cls)
            if "check" in f.metadata
        )
        return gin.configurable(name)(cls)

    return wrap
