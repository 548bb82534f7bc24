"""What a user's gin may hold: bindings, includes and dataset scopes, never code.

gin executes `import x` (and `from x import y`) while it parses, so a `--gin_file` or a
`--gin_param` holding one would run a module from the current folder: a results recipe shared
between labs would be a way to run code. bench's plugins arrive through Python packaging (entry
points, bench.registry), so a user's configuration never needs to import: every import
statement in a user's file, in a file it includes (other than bench's own), or in a binding is
refused before gin sees any of it.

A scope in a binding (`phantom_lt/train.steps = 600`) names a dataset (bench.config.scoped); any other
scope would be kept by gin and used by nothing, so a typo (`foo/train.steps`) is refused like an
unknown key.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from bench.errors import BenchError
from gin import config_parser

IMPORT_HELP = (
    "a configuration may not import code; install a plugin as a package (an entry point "
    "in group bench.methods, bench.datasets, ...: docs/architecture.md) and name it instead"
)


class _Delegate(config_parser.ParserDelegate):
    """Parses values without resolving anything: the check only looks at statement kinds."""

    def configurable_reference(self, scoped_configurable_name, evaluate):
        return scoped_configurable_name

    def macro(self, macro_name):
        return macro_name


def check_user_gin(
    files: Sequence[Path], bindings: Sequence[str], datasets: Iterable[str], own_dir: Path
) -> None:
    """BenchError on an import statement or an unknown scope in the user's files or bindings.

    `own_dir` is bench's gin folder: includes that resolve into it are bench's own and trusted.
    """
    datasets = sorted(set(datasets))
    for path in files:
        _check_file(Path(path), datasets, Path(own_dir), seen=set())
    for binding in bindings:
        _check_text(binding, f"binding {binding.strip()!r}", datasets, Path(own_dir), set(), None)


def _check_file(path: Path, datasets: list, own_dir: Path, seen: set) -> None:
    resolved = path.resolve()
    if resolved in seen:  # an include cycle: gin reports it, nothing more to check here
        return
    seen.add(resolved)
    text = path.read_text(encoding="utf-8-sig")
    _check_text(text, f"--gin_file {path}", datasets, own_dir, seen, path)


def _check_text(text: str, where: str, datasets: list, own_dir: Path, seen: set, source: Path | None) -> None:
    """Walk the statements of `text` as gin's own parser splits them."""
    parser = config_parser.ConfigParser(io.StringIO(text), _Delegate())
    while True:
        try:
            statement = parser.parse_statement()
        except Exception:  # a syntax error: gin reports it, and runs nothing after it
            return
        if statement is None:
            return
        _check_statement(statement, where, datasets, own_dir, seen)


def _check_statement(statement, where: str, datasets: list, own_dir: Path, seen: set) -> None:
    line = getattr(statement.location, "line_num", None)
    at = f"{where}" + (f", line {line}" if line and where.startswith("--gin_file") else "")
    if isinstance(statement, config_parser.ImportStatement):
        raise BenchError(f"{at}: `{statement.format()}` refused: {IMPORT_HELP}")
    if isinstance(statement, config_parser.IncludeStatement):
        included = _resolve_include(statement.filename, own_dir)
        if included is not None and not _inside(included, own_dir):
            _check_file(included, datasets, own_dir, seen)
        return
    scope = getattr(statement, "scope", None)
    if scope and isinstance(statement, (config_parser.BindingStatement, config_parser.BlockDeclaration)):
        first = scope.split("/")[0]
        if first not in datasets or "/" in scope:
            close = difflib.get_close_matches(first, datasets, n=1)
            hint = f"did you mean {close[0]!r}? " if close and first not in datasets else ""
            raise BenchError(
                f"{at}: unknown scope {scope!r}: a scope names one dataset "
                f"(`phantom_lt/train.steps=600`); {hint}`bench ls datasets` lists them"
            )


def _resolve_include(name: str, own_dir: Path) -> Path | None:
    """Where gin finds an include: as given (the current folder), else in bench's gin folder."""
    for candidate in (Path(name), own_dir / name):
        if candidate.is_file():
            return candidate
    return None  # gin reports the missing file


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False
