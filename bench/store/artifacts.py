"""Atomic artifacts: every stage writes into a staging folder and renames it into place.

A stage's folder is complete only when its `manifest.json` (written last, inside the staging
folder) names the stage's config hash; a folder without it, or with another hash, is redone.
Staging folders, temporary files and folders being deleted carry their writer's `pid@host` in
their name, so the leftovers of a killed run are recognised and removed by the next writer in
the same folder, while a concurrent run's work in progress is left alone.

State that is not a plain tensor dict (optimizer, scheduler, RNG, loss trace) is stored without
pickle by `save_state`: tensors in safetensors, the structure around them in JSON.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.store.lock import Owner

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def _umask() -> int:
    """The process's umask (read by setting and restoring it, once, at import)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# the modes a plain open()/mkdir() would give: temporary names must not make results private
FILE_MODE, FOLDER_MODE = 0o666 & ~_umask(), 0o777 & ~_umask()
# `.<name>.<kind>-<pid>@<host>~<random>[.tmp]`: what `_temp_prefix` names and `remove_leftovers` finds
_LEFTOVER = re.compile(r"^\..+\.(?:staging|tmp|trash)-(?P<owner>\d+@[^~/]+)~\w+(?:\.tmp)?$")


def _temp_prefix(path: Path, kind: str) -> str:
    """Prefix of a hidden sibling of `path` owned by this process (kind: staging, tmp, trash)."""
    return f".{Path(path).name}.{kind}-{Owner.me().tag}~"


def remove_leftovers(folder: Path, recursive: bool = False) -> list[Path]:
    """Delete the staging folders, temporary files and trash of dead writers in `folder`.

    Only entries whose writer is known to be gone (this host, pid dead) are removed; those of a
    live run, or of another host, are kept. Returns what was removed.
    """
    folder, removed = Path(folder), []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if match:
            owner = Owner.from_tag(match["owner"])
            if owner is not None and owner.is_dead():
                _remove(entry)
                removed.append(entry)
        elif recursive and entry.is_dir() and not entry.is_symlink():
            removed += remove_leftovers(entry, recursive=True)
    if removed:
        log.info("removed %d leftover(s) of killed runs in %s", len(removed), folder)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def discard(folder: Path) -> None:
    """Delete a folder without ever leaving it half-deleted under its own name.

    It is renamed to a hidden trash name first, so a kill during the deletion leaves a leftover
    that the next writer removes, never a partial artifact that still looks complete.
    """
    folder = Path(folder)
    trash = folder.with_name(f"{_temp_prefix(folder, 'trash')}{uuid.uuid4().hex[:8]}")
    try:
        os.replace(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _write_atomic(path: Path, write: Callable, binary: bool = False) -> None:
    """Write `path` via a temporary sibling file (flushed to disk) and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path, "tmp"), suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp's 0600 would hide results from a shared group
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON to `path` via a temporary file in the same folder and os.replace."""

    def write(f):
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")

    _write_atomic(path, write)


def plain_json(obj):
    """`obj` as write_json_atomic stores it and a reader parses it back (arrays as lists, paths as
    strings, tuples as lists): what a schema check must see."""
    return json.loads(json.dumps(obj, default=_json_default))


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to `path` atomically (temporary file + os.replace)."""
    _write_atomic(path, lambda f: f.write(text))


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json_object(path: Path) -> dict | None:
    """The JSON object stored at `path`, or None if absent, unreadable or not an object: a
    damaged artifact reads as a missing one, so the stage that wrote it is redone."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a stage folder, or None if absent, unreadable or not a JSON object."""
    return read_json_object(Path(folder) / MANIFEST)


def is_complete(folder: Path, config_hash: str) -> bool:
    """True if `folder` holds a finished stage for exactly this config hash."""
    manifest = read_manifest(folder)
    return manifest is not None and manifest.get("config_hash") == config_hash


@contextmanager
def stage_dir(folder: Path, config_hash: str, **info) -> Iterator[Path]:
    """Yield a staging folder; on success write the manifest and rename it to `folder`.

    If a concurrent run completed the same stage meanwhile, its folder is kept and ours dropped.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder.parent)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=_temp_prefix(folder, "staging")))
    try:
        os.chmod(staging, FOLDER_MODE)  # mkdtemp's 0700, likewise
        yield staging
        _fsync_files(staging)  # the data is on disk before the manifest that vouches for it
        write_json_atomic(staging / MANIFEST, {"config_hash": config_hash, **info})
        _publish(staging, folder, config_hash)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _fsync_files(folder: Path) -> None:
    """Flush every file under `folder` to disk (a crash of the machine, not only of the process)."""
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _publish(staging: Path, folder: Path, config_hash: str) -> None:
    """Rename the finished staging folder to `folder`, replacing an incomplete or outdated one."""
    if is_complete(folder, config_hash):  # a concurrent run finished first: keep its copy
        return
    if folder.exists():
        discard(folder)
    try:
        os.replace(staging, folder)
    except OSError:
        if not is_complete(folder, config_hash):  # not a concurrent run's identical result
            raise


# -- nested state without pickle -------------------------------------------------------------
def save_state(folder: Path, name: str, state) -> None:
    """Store nested state (dicts, lists, tuples, numbers, strings, tensors) without pickle.

    Tensors go to `<name>.safetensors`, the structure around them to `<name>.json`; dicts with
    non-string keys (an optimizer's per-parameter state) and tuples keep their types, and floats
    round-trip exactly, so `load_state` returns an equal object.
    """
    import torch  # imported here: reports and `bench ls` read artifacts without torch
    from safetensors.torch import save_file

    tensors: dict = {}
    structure = _encode(state, tensors, torch.Tensor)
    save_file(tensors, str(Path(folder) / f"{name}.safetensors"))
    write_json_atomic(Path(folder) / f"{name}.json", {"state": structure})


def load_state(folder: Path, name: str):
    """The state written by `save_state(folder, name, ...)`, tensors on the CPU."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(folder) / f"{name}.safetensors"))
    structure = json.loads((Path(folder) / f"{name}.json").read_text(encoding="utf-8"))["state"]
    return _decode(structure, tensors)


def _encode(obj, tensors: dict, tensor_type: type):
    def enc(value):
        return _encode(value, tensors, tensor_type)

    if isinstance(obj, tensor_type):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: enc(v) for k, v in obj.items()}
        return {"__items__": [[enc(k), enc(v)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [enc(v) for v in obj]}
    if isinstance(obj, list):
        return [enc(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"save_state cannot store a {type(obj).__name__}")


def _decode(obj, tensors: dict):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    return {k: _decode(v, tensors) for k, v in obj.items()}
