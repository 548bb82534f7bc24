"""Hydra-style command-line overrides (`key=value`, `key=[a,b]`) translated to gin bindings.

gin needs Python literals (strings quoted); researchers type `nih_lt.root=/data/nih` and
`methods=[fm,cbfm]`. Grid axes and run options are separated from gin bindings here, and the
executor's settings (`executor.partition=gpu`) from the cells' bindings.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from dataclasses import dataclass, field

from bench.errors import BenchError

GRID_AXES = ("methods", "datasets", "seeds")
RUN_OPTIONS = ("experiment", "results_dir", "executor")
EXECUTOR_SCOPE = "executor."
_KEY = re.compile(r"^[A-Za-z_][\w.]*(/[A-Za-z_][\w.]*)?$")
_WORDS = {"true": True, "false": False, "null": None, "none": None}


@dataclass
class Overrides:
    """Parsed overrides: grid axes, run options and gin binding strings."""

    axes: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    bindings: list = field(default_factory=list)


def parse_overrides(args: list[str]) -> Overrides:
    """Split `key=value` arguments into grid axes, run options and gin bindings."""
    out = Overrides()
    for arg in args:
        key, value = _split(arg)
        if key in GRID_AXES:
            items = to_python(value)
            out.axes[key] = list(items) if isinstance(items, (list, tuple)) else [items]
        elif key in RUN_OPTIONS:
            option = to_python(value)
            if isinstance(option, (list, tuple, dict)) or option is None:
                raise BenchError(
                    f"override {arg!r}: {key} takes a single value, not a list (one folder or name, "
                    f"e.g. {key}=NAME)"
                )
            out.options[key] = str(option)
        elif "." in key:
            out.bindings.append(f"{key} = {to_gin_literal(value)}")
        else:
            raise BenchError(
                f"override {arg!r}: {key!r} is neither a grid axis ({', '.join(GRID_AXES)}), "
                f"a run option ({', '.join(RUN_OPTIONS)}) nor a gin binding `scope.param=value`"
                + _did_you_mean(key)
            )
    return out


def split_executor_bindings(bindings: list[str]) -> tuple[list[str], list[str]]:
    """Split gin bindings into the cells' and the executor's (`executor.*`, bench.scale.executors).

    Where a cell runs must not change what it computes, so the executor's settings never enter
    a cell's gin configuration (nor its config hash).
    """
    cells = [b for b in bindings if not b.lstrip().startswith(EXECUTOR_SCOPE)]
    return cells, [b for b in bindings if b.lstrip().startswith(EXECUTOR_SCOPE)]


def _split(arg: str) -> tuple[str, str]:
    if "=" not in arg:
        raise BenchError(f"malformed override {arg!r}: expected key=value, e.g. methods=[fm,cbfm]")
    key, value = (s.strip() for s in arg.split("=", 1))
    if not _KEY.match(key):
        raise BenchError(
            f"malformed override {arg!r}: {key!r} is not a valid key; keys are grid axes, run "
            "options or scope.param, e.g. train.steps=100"
        )
    if value == "":
        raise BenchError(
            f"malformed override {arg!r}: empty value; give one, e.g. methods=[fm] or {key}=null"
        )
    return key, value


def to_python(value: str, depth: int = 0):
    """Parse one override value: Python/YAML-ish literals, lists, and bare words as strings.

    Values nested more than MAX_DEPTH deep, sets, and numbers that overflow to infinity are
    malformed (one line), not a RecursionError or a binding gin cannot read.
    """
    value = value.strip()
    if depth > MAX_DEPTH:
        raise BenchError(f"malformed value: lists nested more than {MAX_DEPTH} deep; no setting takes that")
    if value.startswith("[") or value.startswith("("):
        closing = "]" if value[0] == "[" else ")"
        if not value.endswith(closing):
            raise BenchError(f"malformed value {value!r}: unbalanced brackets")
        items = [s for s in _split_top_level(value[1:-1]) if s.strip()]
        seq = [to_python(s, depth + 1) for s in items]
        return seq if closing == "]" else tuple(seq)
    if value.lower() in _WORDS:
        return _WORDS[value.lower()]
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        if any(c in value for c in "[](){}\"'"):
            raise BenchError(f"malformed value {_short(value)}: unbalanced brackets or quotes") from None
        return value  # a bare word, e.g. a name or a path
    except (TypeError, RecursionError, MemoryError) as exc:  # {{1}}, 200,000 unary minus signs
        raise BenchError(
            f"malformed value {_short(value)}: not a plain literal ({type(exc).__name__}); "
            "give a number, a word or a list such as [a,b]"
        ) from None
    return _checked(parsed, value)


MAX_DEPTH = 16


def _checked(parsed, value: str):
    """A literal_eval result an override may carry: no sets or dicts of sets, no infinite floats."""
    if isinstance(parsed, (set, frozenset)):
        raise BenchError(f"malformed value {_short(value)}: a set; give a list such as [a,b]")
    if isinstance(parsed, float) and not math.isfinite(parsed):
        raise BenchError(f"malformed value {_short(value)}: overflows to infinity; give a finite number")
    if isinstance(parsed, complex):
        raise BenchError(f"malformed value {_short(value)}: a complex number; give a real one")
    return parsed


def _short(value: str) -> str:
    """The value as typed, cut to 40 characters (a 200,000-character value must not fill the terminal)."""
    return repr(value if len(value) <= 40 else value[:37] + "...")


def to_gin_literal(value: str) -> str:
    """A gin-parsable literal for an override value; gin references (@x, %X) pass through."""
    if value.startswith(("@", "%")):
        return value
    return repr(to_python(value))


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not nested inside brackets or quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
            if depth < 0:
                raise BenchError(f"malformed value {_short('[' + text + ']')}: unbalanced brackets")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0 or quote:
        raise BenchError(f"malformed value {_short('[' + text + ']')}: unbalanced brackets or quotes")
    parts.append(text[start:])
    return parts


def _did_you_mean(key: str) -> str:
    """'; did you mean 'methods'?' for a near miss of a grid axis or run option, else ''."""
    return did_you_mean(key, [*GRID_AXES, *RUN_OPTIONS])


def did_you_mean(name: str, candidates, cutoff: float = 0.6) -> str:
    """'; did you mean 'X'?' for the closest of `candidates` to a mistyped `name`, else ''.

    The one near-miss hint of the command line (grid keys, gin parameters, gin files, experiments).
    """
    close = closest(name, candidates, cutoff)
    return f"; did you mean {close!r}?" if close else ""


def closest(name: str, candidates, cutoff: float = 0.6) -> str | None:
    """The candidate nearest to `name` (difflib's ratio of at least `cutoff`), or None."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=cutoff)
    return close[0] if close else None
