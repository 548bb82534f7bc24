"""gin configuration: the single source of truth for every cell.

A cell's configuration is parsed fresh from, in order (later wins): `base.gin`, the dataset's
`datasets/<name>.gin`, the method's `methods/<name>.gin`, the experiment's
`experiments/<name>.gin`, the user's `--gin_file`s, and finally the user's bindings. Dataset and
method files therefore set defaults (backbone, schedule) that an experiment or the user may
override, and two cells of one grid can use different backbones.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import re
import tokenize
from collections.abc import Sequence
from pathlib import Path

import gin
from bench.config.overrides import closest, did_you_mean
from bench.config.usergin import check_user_gin
from bench.errors import BenchError

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][\w.-]*$")
_UNKNOWN_CONFIGURABLE = re.compile(r"^No configurable matching '([^']+)'")
_UNKNOWN_PARAMETER = re.compile(r"^Configurable '([^']+)' doesn't have a parameter named '([^']+)'")


def gin_dir() -> Path:
    """The folder holding bench's gin files (the namespace package `bench.gin`).

    The top-level `gin/` folder has no __init__.py on purpose: a regular package there would
    shadow the gin-config package whenever the repository root is on sys.path.
    """
    import bench.gin

    return Path(list(bench.gin.__path__)[0])


def experiment_file(name: str) -> Path:
    """Path of experiments/<name>.gin, or a clear error listing the known experiments.

    The name is also a folder under results_dir, so it must be a plain name: `../base` would
    pick another gin file and write the experiment outside results_dir.
    """
    known = sorted(p.stem for p in (gin_dir() / "experiments").glob("*.gin"))
    if not _PLAIN_NAME.match(str(name)):
        raise BenchError(
            f"experiment {name!r} must be a name, not a path (known: {', '.join(known)}); "
            "add your own as an --gin_file"
        )
    path = gin_dir() / "experiments" / f"{name}.gin"
    if not path.is_file():
        raise BenchError(
            f"unknown experiment {name!r}{did_you_mean(name, known)} (known: {', '.join(known)})"
        )
    return path


def own_files() -> dict[str, list[str]]:
    """bench's own presets and experiments, `folder -> [stem, ...]`: what `--gin_file` may name."""
    return {
        folder: sorted(p.stem for p in (gin_dir() / folder).glob("*.gin"))
        for folder in ("presets", "experiments")
    }


def missing_file_hint(name: str) -> str:
    """For a `--gin_file` that is not there: the nearest of bench's own files, then all of them.

    Matched on the whole relative path (`presets/cpu_smok.gin`), else on the file name alone
    (`cpu_smok.gin`, `cpu_smoke`), so a forgotten folder is found too.
    """
    files = own_files()
    paths = [f"{folder}/{stem}.gin" for folder, stems in files.items() for stem in stems]
    by_stem = {Path(p).stem: p for p in reversed(paths)}  # a stem in both folders: the preset
    close = closest(name, paths) or by_stem.get(closest(Path(name).stem, by_stem) or "")
    hint = f"; did you mean {close!r}?" if close else ""
    listed = "; ".join(f"{folder}/ {', '.join(stems)}" for folder, stems in files.items())
    return f"{hint} (bench's own: {listed})"


def plugin_file(kind: str, name: str, plugin_cls=None) -> Path | None:
    """The gin file of a plugin: bench's own `<kind>/<name>.gin`, or the plugin's `gin_file`."""
    own = gin_dir() / kind / f"{name}.gin"
    if own.is_file():
        return own
    extra = getattr(plugin_cls, "gin_file", None)
    return Path(extra) if extra else None


def check_user_files(files: Sequence[str]) -> list[Path]:
    """Resolve --gin_file arguments (as given, else in bench's gin folder, like an `include`),
    failing early on a missing or non-text file (gin would not say which)."""
    paths = []
    for f in files:
        p = Path(f)
        if not p.exists() and (gin_dir() / f).is_file():  # bench's own: --gin_file presets/cpu_smoke.gin
            p = gin_dir() / f
        if p.exists() and not p.is_file():
            raise BenchError(f"--gin_file {f}: not a regular file; pass a .gin file")
        if not p.is_file():
            raise BenchError(f"--gin_file {f}: no such file{missing_file_hint(f)}")
        try:
            p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BenchError(
                f"--gin_file {f}: not a readable UTF-8 text file ({type(exc).__name__}); pass a .gin file"
            ) from None
        paths.append(p)
    check_user_gin(paths, (), _dataset_names(), gin_dir())
    return paths


def _dataset_names() -> list[str]:
    """The registered dataset names (the scopes a user's binding may carry)."""
    from bench import registry

    return registry.datasets.names()


def parse(
    files: Sequence[Path], bindings: Sequence[str], dataset: str | None = None, datasets: Sequence[str] = ()
) -> None:
    """Replace the global gin config with `files` + `bindings`; gin errors become BenchError.

    With `dataset` (a cell's), bindings scoped to it (`phantom_lt/train.steps = 600`) apply
    unscoped and those scoped to the other `datasets` are dropped, in place (bench.config.scoped).
    """
    check_user_gin((), bindings, _dataset_names(), gin_dir())
    gin.clear_config()
    _add_search_path()
    # gin first tries an `include` path as given and logs a spurious root-logger ERROR before it
    # finds the file on the search path; real failures still raise below.
    logging.disable(logging.ERROR)
    try:
        _parse_all(files, bindings, dataset, datasets)
    except Exception as exc:  # gin raises ValueError, KeyError, tokenize/Syntax errors
        raise BenchError(gin_error_message(exc)) from None
    finally:
        logging.disable(logging.NOTSET)


def _parse_all(
    files: Sequence[Path], bindings: Sequence[str], dataset: str | None, datasets: Sequence[str]
) -> None:
    """gin's parse_config_files_and_bindings, with dataset scopes resolved for `dataset` (if given)
    and a file's byte-order mark (written by some Windows editors) dropped."""
    from bench.config.scoped import has_scopes, localise, localise_bindings

    for f in files:
        raw = Path(f).read_text(encoding="utf-8")
        text = raw.removeprefix("\ufeff")
        if dataset is not None and has_scopes(text, datasets):
            gin.parse_config(localise(text, dataset, datasets))
        elif text != raw:
            gin.parse_config(text)
        else:  # unchanged: gin reads the file itself (and names it in its errors)
            gin.parse_config_file(str(f))
    gin.parse_config(list(bindings) if dataset is None else localise_bindings(bindings, dataset, datasets))
    gin.finalize()


@functools.cache
def _add_search_path() -> None:
    """bench's gin folder on gin's `include` search path, once (gin keeps the list across clears)."""
    gin.add_config_file_search_path(str(gin_dir()))
    _guard_package_reader()


def _guard_package_reader() -> None:
    """gin's package reader answers "no such file" instead of crashing on a namespace package.

    For `include 'methods/optprior.gin'` gin first asks its package reader whether `methods` is an
    importable package holding the file. Where the repository root is on sys.path (`python -m
    pytest` or `python -m bench` run there), its plugin folder methods/ is a namespace package
    without a file, and gin's check raises TypeError instead of returning False, so every method
    gin file with an include (optprior_opt.gin) failed to parse. The check is wrapped once.
    """
    readers = getattr(gin.config, "_FILE_READERS", None)
    if not isinstance(readers, list):
        return
    for i, (reader, exists) in enumerate(readers):
        if exists is not os.path.isfile and not getattr(exists, "_bench_guarded", False):
            readers[i] = (reader, _guarded(exists))


def _guarded(exists):
    """`exists`, answering False where it raises TypeError (a namespace package has no origin)."""

    def check(path) -> bool:
        try:
            return exists(path)
        except TypeError:
            return False

    check._bench_guarded = True
    return check


def gin_error_message(exc: Exception) -> str:
    """One line for a gin parse error: gin's first line plus, for a misspelt name, the closest one."""
    if isinstance(exc, (RecursionError, MemoryError)):  # e.g. 3,000 nested brackets
        return "bad gin configuration: a value nested too deep to parse; check the brackets"
    if isinstance(exc, tokenize.TokenError) and len(exc.args) == 2:  # (message, (line, column))
        first = f"{exc.args[0]} (line {exc.args[1][0]}); check the brackets and quotes"
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if ". Searched config paths" in first:  # an `include` that is not there
        first = (
            first.split(". Searched config paths")[0] + "; an include is read from the current folder "
            f"or from {gin_dir()}"
        )
    hint = _suggestion(first)
    return f"bad gin configuration: {first.rstrip('.') if hint else first}{hint}"


def _suggestion(message: str) -> str:
    """'; did you mean ...?' for an unknown configurable or parameter, else ''."""
    param = _UNKNOWN_PARAMETER.search(message)
    if param:
        return did_you_mean(param[2], _parameters(param[1]))
    scope = _UNKNOWN_CONFIGURABLE.search(message)
    if scope:
        return did_you_mean(scope[1], _configurables()) or "; `bench ls` lists the plugin names"
    return ""


# gin's registry is private: a gin release that changes it loses the suggestion, nothing else
def _configurables() -> list[str]:
    try:
        return sorted({c.name for _, c in gin.config._REGISTRY.items()})
    except AttributeError:
        return []


def _parameters(scope: str) -> list[str]:
    try:
        return list(inspect.signature(gin.config._REGISTRY.get_match(scope).wrapped).parameters)
    except (AttributeError, TypeError, ValueError):
        return []


# Settings that say where and how often work is done, never what it computes: they feed no hash,
# so moving a grid to Slurm or checkpointing more often reuses every finished stage.
NEVER_HASHED = (
    "executor.",
    "train.checkpoint_",
    "train.activation_checkpointing",
    "train.sync_every",
    "train.log_with",
    "train.track_",
    "loader.",
    "budget.",
)  # no effect on results (loader: how classifier batches are read;
# budget: the device throughput a cell's GPU-hours are estimated at, bench.pipeline.budget;
# train.log_with / train.track_*: what an experiment tracker is sent, bench.pipeline.tracking)


def bindings_text(exclude: Sequence[str] = ("grid.",), include: Sequence[str] | None = None) -> str:
    """Canonical text of the parsed bindings, optionally filtered by selector prefix.

    gin prints a long value over several lines (`key = \\` then indented lines): a binding is
    filtered as a whole, continuation lines included.
    """
    kept = []
    for binding in _bindings(gin.config_str()):
        if binding.startswith(tuple(exclude) + NEVER_HASHED):
            continue
        if include is not None and not binding.startswith(tuple(include)):
            continue
        kept.append(binding)
    return "\n".join(kept)


def _bindings(config: str) -> list[str]:
    """The bindings of a gin config text, each with its continuation lines, comments dropped."""
    out: list[str] = []
    for line in config.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0].isspace() and out:
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


def digest(*parts: object) -> str:
    """A short stable hash of the given parts (strings or JSON-able reprs)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
