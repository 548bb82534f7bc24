"""A lock per grid cell, so concurrent `bench run`s on one results folder never run a cell twice.

`<cell>/.lock` is created atomically with its content (a hard link that fails if the name
exists; O_CREAT | O_EXCL where links are not supported) and holds the owner's pid, host, start
time and a random token; it is removed when the cell is done. A lock that is not such a JSON
object (garbage, a wrong type) is taken over at once: no live writer leaves one. A second run that finds a live
lock skips the cell (the owner finishes it). A lock is stale, and taken over with a warning,
when its owner is gone: on the same host its pid is dead (or reused by another process), on
another host it has not been refreshed for `BENCH_LOCK_STALE_S` seconds (default 600): the
owner touches its lock every minute, so a long cell is never taken from a live run elsewhere.
A Slurm job requeued onto another node takes over the lock of its own earlier run at once
(same job id), instead of waiting for the timeout.

`Owner` also names the writer of staging folders and temporary files (bench.store.artifacts), so
the leftovers of a killed run can be told apart from a concurrent run's work in progress.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
LOCK = ".lock"
STALE_ENV = "BENCH_LOCK_STALE_S"
DEFAULT_STALE_S = 600.0  # ten missed heartbeats
# a lock still empty after this long lost its writer between create and write (the fallback path)
EMPTY_GRACE_S = 2.0
UNREADABLE_GRACE_S = 60.0  # an older takeover guard belongs to a killed run


@dataclass(frozen=True)
class Owner:
    """A process: pid, host and (on Linux) its start time in clock ticks, to detect pid reuse."""

    pid: int
    host: str
    start_tick: int | None = None

    @classmethod
    def me(cls) -> Owner:
        """The current process."""
        return cls(os.getpid(), socket.gethostname(), _start_tick(os.getpid()))

    @property
    def tag(self) -> str:
        """`pid@host`, used in the names of staging folders and temporary files."""
        return f"{self.pid}@{self.host}"

    @classmethod
    def from_tag(cls, tag: str) -> Owner | None:
        """The owner named by `tag`, or None if it is not a `pid@host` tag."""
        pid, _, host = tag.partition("@")
        return cls(int(pid), host) if pid.isdigit() and host else None

    def is_dead(self) -> bool:
        """True only when the process is known to be gone (this host, pid dead or reused)."""
        if self.host != socket.gethostname():
            return False
        return not process_alive(self.pid, self.start_tick)


def process_alive(pid: int, start_tick: int | None = None) -> bool:
    """Whether `pid` runs on this host (a zombie counts as dead; a reused pid as another process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    stat = _proc_stat(pid)
    if stat is None:  # no /proc (not Linux): trust kill(0)
        return True
    state, tick = stat
    return state != "Z" and (start_tick is None or tick == start_tick)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in ticks) from /proc/<pid>/stat, or None where unavailable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[19])


def _start_tick(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def stale_after_s() -> float:
    """Seconds without a refresh after which another host's lock is stale (BENCH_LOCK_STALE_S)."""
    value = os.environ.get(STALE_ENV, "")
    try:
        return float(value) if value else DEFAULT_STALE_S
    except ValueError:
        log.warning("%s=%r is not a number of seconds; using %s", STALE_ENV, value, DEFAULT_STALE_S)
        return DEFAULT_STALE_S


def slurm_job() -> str | None:
    """The Slurm job (array job_task) this process belongs to; it survives a requeue."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


class CellLocked(Exception):
    """The cell is being run by another live process, named by `holder` (the lock's content)."""

    def __init__(self, holder: dict):
        self.holder = holder
        super().__init__(
            f"another bench run (pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')}) is running this cell"
        )


class CellLock:
    """An acquired cell lock; `release` (or leaving the `with` block) removes it."""

    def __init__(self, path: Path, content: dict, refresh_s: float):
        self.path, self.content = path, content
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._refresh, args=(refresh_s,), daemon=True, name=f"bench-lock-{path.parent.name}"
        )
        self._heartbeat.start()

    @classmethod
    def acquire(cls, folder: Path, stale_after: float | None = None) -> CellLock:
        """Lock `folder` or raise CellLocked; a stale lock is taken over with a warning."""
        stale_after = stale_after_s() if stale_after is None else stale_after
        path = Path(folder) / LOCK
        path.parent.mkdir(parents=True, exist_ok=True)
        holder: dict = {}
        deadline = time.monotonic() + EMPTY_GRACE_S + 1.0
        for _ in range(100):  # each retry follows a lock that vanished, was broken or is being written
            content = _create(path)
            if content is not None:
                return cls(path, content, refresh_s=max(0.5, min(60.0, stale_after / 4)))
            holder, age = _read(path)
            if holder is None:
                continue
            reason = _stale_reason(holder, age, stale_after)
            if reason is None and holder == {} and time.monotonic() < deadline:
                time.sleep(0.1)  # an empty lock: its writer may be between creating and writing it
                continue
            if reason is None:
                raise CellLocked(holder)
            log.warning(
                "%s: taking over the stale lock of pid %s on host %s (%s)",
                path.parent,
                holder.get("pid", "?"),
                holder.get("host", "?"),
                reason,
            )
            _break(path, holder)
            time.sleep(0.05)  # let a concurrent takeover finish before trying again
        raise CellLocked(holder or {})

    def _refresh(self, every: float) -> None:
        """Heartbeat: touch the lock while it is still ours, so other hosts see it is alive."""
        while not self._stop.wait(every):
            if self.owned():
                try:
                    os.utime(self.path)
                except OSError:
                    pass

    def owned(self) -> bool:
        """Whether the lock file is still this lock (not taken over by another run)."""
        holder, _ = _read(self.path)
        return bool(holder) and holder.get("token") == self.content["token"]

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        self._stop.set()
        self._heartbeat.join()
        if self.owned():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> CellLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _create(path: Path) -> dict | None:
    """Create the lock file exclusively with this process's identity; None if it exists.

    The content is written to a private file first and hard-linked into place (link fails if the
    name exists, atomically, on local disks and NFS alike), so a lock file is never seen empty
    or half-written: an unreadable one is garbage and is taken over at once. Where hard links
    are not supported, the lock is created empty with O_EXCL and then written.
    """
    me = Owner.me()
    content = {
        "pid": me.pid,
        "host": me.host,
        "start_tick": me.start_tick,
        "job": slurm_job(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "token": uuid.uuid4().hex,
    }
    # named like bench.store.artifacts' temporary files, so a killed run's one is removed as a leftover
    private = path.with_name(f".{path.name}.tmp-{me.tag}~{content['token'][:8]}.tmp")
    try:
        private.write_text(json.dumps(content))
        os.link(private, path)
        return content
    except FileExistsError:
        return None
    except OSError:  # no hard links here: fall back to an exclusive create, then the write
        pass
    finally:
        private.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    try:
        os.write(fd, json.dumps(content).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return content


def _read(path: Path) -> tuple[dict | None, float]:
    """(content, seconds since the last refresh); content None if the lock vanished, {} if empty,
    and {"garbage": text} if it is not a JSON object (no writer ever leaves it so)."""
    try:
        age = time.time() - path.stat().st_mtime
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, 0.0
    if not raw:
        return {}, age
    try:
        content = json.loads(raw.decode("utf-8"))
    except ValueError:
        content = None
    return (content if isinstance(content, dict) and content else {"garbage": raw[:40].hex()}), age


def _stale_reason(holder: dict, age: float, stale_after: float) -> str | None:
    """Why the lock's owner is presumed gone, or None while it may be alive."""
    if not holder:
        return "empty lock file" if age > EMPTY_GRACE_S else None
    try:
        owner = Owner(int(holder["pid"]), str(holder["host"]), holder.get("start_tick"))
    except (KeyError, TypeError, ValueError):
        return "unreadable or malformed lock file"
    if owner.host == socket.gethostname():
        return "the process is gone" if owner.is_dead() else None
    if holder.get("job") and holder.get("job") == slurm_job():
        return f"an earlier run of this Slurm job ({holder['job']}), requeued"
    if age > stale_after:
        return f"not refreshed for {age:.0f} s > {STALE_ENV}={stale_after:g}"
    return None


def _break(path: Path, holder: dict) -> None:
    """Remove the stale lock `holder`, unless another run replaced it meanwhile.

    A guard file serialises concurrent takeovers, so no run removes a lock that another run
    has just created.
    """
    guard = path.with_name(LOCK + ".break")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:  # a takeover takes milliseconds: an old guard belongs to a killed run
            if time.time() - guard.stat().st_mtime > UNREADABLE_GRACE_S:
                guard.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        return
    try:
        current, _ = _read(path)
        if current == holder:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)
