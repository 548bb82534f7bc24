"""Dataset-scoped gin bindings: `phantom_lt/train.steps = 600` applies to phantom_lt's cells only.

One experiment file sets the budgets of every dataset in its grid, although `train.steps` is one
setting: prefix a binding with a dataset's name and a slash. Before gin parses a cell's files
and command-line bindings, every binding scoped to the cell's dataset loses its scope and every
binding scoped to another dataset is dropped, where it stands. A scoped binding therefore takes
part in the usual order of precedence (base < dataset < method < experiment < --gin_file <
command line: later wins), and the cell's operative config, stage hashes and record show the
plain binding the cell used, as if it had been written for that dataset alone. Scopes that are
not dataset names are refused before parsing (bench.config.usergin), like unknown keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SCOPED = re.compile(r"^\s*([A-Za-z_][\w.-]*)/")


def statements(text: str) -> list[list[str]]:
    """The lines of `text` grouped into statements: a binding with the lines its brackets (or a
    trailing backslash) carry on to; comments and blank lines are statements of their own."""
    out: list[list[str]] = []
    depth, carry = 0, False
    for line in text.splitlines():
        if (depth > 0 or carry) and out:
            out[-1].append(line)
        else:
            out.append([line])
        depth = max(0, depth + _bracket_balance(line))
        carry = line.rstrip().endswith("\\")
    return out


def _bracket_balance(line: str) -> int:
    """Opening minus closing brackets of a line, outside strings and after no comment."""
    balance, quote = 0, None
    for ch in line:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            break
        elif ch in "([{":
            balance += 1
        elif ch in ")]}":
            balance -= 1
    return balance


def localise(text: str, dataset: str, datasets: Iterable[str]) -> str:
    """`text` with `dataset/` scopes removed and bindings scoped to other `datasets` dropped."""
    others = set(datasets) - {dataset}
    kept: list[str] = []
    for lines in statements(text):
        match = _SCOPED.match(lines[0])
        scope = match.group(1) if match else None
        if scope == dataset:
            kept += [lines[0].replace(f"{scope}/", "", 1), *lines[1:]]
        elif scope not in others:
            kept += lines
    return "\n".join(kept) + ("\n" if text.endswith("\n") else "")


def localise_bindings(bindings: Iterable[str], dataset: str, datasets: Iterable[str]) -> list[str]:
    """Command-line bindings localised one by one (an empty string for a dropped one is removed)."""
    out = [localise(b, dataset, datasets) for b in bindings]
    return [b for b in out if b.strip()]


def has_scopes(text: str, datasets: Iterable[str]) -> bool:
    """Whether any binding of `text` is scoped to one of `datasets`."""
    names = set(datasets)
    return any((m := _SCOPED.match(lines[0])) and m.group(1) in names for lines in statements(text))
