"""gin configuration: the single source of truth for every cell.

A cell's configuration is parsed fresh from, in order (later wins): `base.gin`, the dataset's
`datasets/<name>.gin`, the method's `methods/<name>.gin`, the experiment's
`experiments/<name>.gin`, the user's `--gin_file`s, and finally the user's bindings. Dataset and
method files therefore set defaults (backbone, schedule) that an experiment or the user may
override, and two cells of one grid can use different backbones.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import gin

from bench.errors import BenchError


@gin.configurable("pipeline")
@dataclass
class PipelineConfig:
    """Which backbone, encoder and evaluators a cell uses (set per dataset in its gin file)."""

    backbone: str = "mlp"
    encoder: str = "pixel"
    evaluators: Sequence[str] = ("swd",)


@gin.configurable("grid")
@dataclass
class GridConfig:
    """Grid axes an experiment declares; command-line axes replace them."""

    methods: Sequence[str] = ("fm",)
    datasets: Sequence[str] = ("synthetic2d",)
    seeds: Sequence[int] = (0,)


def gin_dir() -> Path:
    """The folder holding bench's gin files (the namespace package `bench.gin`).

    The top-level `gin/` folder has no __init__.py on purpose: a regular package there would
    shadow the gin-config package whenever the repository root is on sys.path.
    """
    import bench.gin

    return Path(list(bench.gin.__path__)[0])


def experiment_file(name: str) -> Path:
    """Path of experiments/<name>.gin, or a clear error listing the known experiments."""
    path = gin_dir() / "experiments" / f"{name}.gin"
    if not path.is_file():
        known = sorted(p.stem for p in (gin_dir() / "experiments").glob("*.gin"))
        raise BenchError(f"unknown experiment {name!r} (known: {', '.join(known)})")
    return path


def plugin_file(kind: str, name: str, plugin_cls=None) -> Optional[Path]:
    """The gin file of a plugin: bench's own `<kind>/<name>.gin`, or the plugin's `gin_file`."""
    own = gin_dir() / kind / f"{name}.gin"
    if own.is_file():
        return own
    extra = getattr(plugin_cls, "gin_file", None)
    return Path(extra) if extra else None


def check_user_files(files: Sequence[str]) -> list[Path]:
    """Resolve --gin_file arguments, failing early on a missing file."""
    paths = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise BenchError(f"--gin_file {f}: no such file")
        paths.append(p)
    return paths


def parse(files: Sequence[Path], bindings: Sequence[str]) -> None:
    """Replace the global gin config with `files` + `bindings`; gin errors become BenchError."""
    gin.clear_config()
    gin.add_config_file_search_path(str(gin_dir()))
    # gin first tries an `include` path as given and logs a spurious root-logger ERROR before it
    # finds the file on the search path; real failures still raise below.
    logging.disable(logging.ERROR)
    try:
        gin.parse_config_files_and_bindings([str(f) for f in files], list(bindings))
    except Exception as exc:  # gin raises ValueError, KeyError, tokenize/Syntax errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"bad gin configuration: {first}") from None
    finally:
        logging.disable(logging.NOTSET)


def bindings_text(exclude: Sequence[str] = ("grid.",), include: Optional[Sequence[str]] = None) -> str:
    """Canonical text of the parsed bindings, optionally filtered by selector prefix."""
    lines = []
    for line in gin.config_str().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith(tuple(exclude)):
            continue
        if include is not None and not line.startswith(tuple(include)):
            continue
        lines.append(line)
    return "\n".join(lines)


def digest(*parts: object) -> str:
    """A short stable hash of the given parts (strings or JSON-able reprs)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
