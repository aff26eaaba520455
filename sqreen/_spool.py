"""The spool: what could not be sent survives the process, and the blocks survive a restart.

A directory per app and destination (``<temp dir>/sqreen-<uid>/<app name>-<destination>/`` by
default; ``spool=PATH`` puts the destinations' directories under ``PATH``; ``spool=False`` for
none), mode 0700. The destination is a digest of the collector's endpoint and the token
(:func:`destination_key`): what was spooled for one collector, under one key, is sent only
there with that key, and only that collector's blocks are enforced from it. Two apps that
happen to share a name (every app run by ``uvicorn`` or ``gunicorn`` is named after it) do
not send each other's events, nor enforce each other's blocks.

- **Batches** the collector did not take (it is down, it answered 5xx) are written there as
  they fail, one file a batch (``<pid>-<prefix>-<n>.batch``, written to a temporary name and
  renamed, so a file is whole or absent), and removed once delivered. At shutdown, what is
  left in memory is written too. The next process of the same app claims the files of
  processes that are gone (by renaming them, so two processes never send one twice) and
  sends them first; the collector drops the duplicates of a batch that had arrived after all.
  Bounded: past :data:`MAX_SPOOL_BYTES`, the oldest files go (counted as dropped).
- **Who is gone**: before its first batch file, a process takes an exclusive ``flock`` on
  ``<pid>-<prefix>.lock`` and holds it for its life; the kernel releases it when the process
  ends, however it ends. A file whose owner's lock can be taken is an orphan, whatever its
  pid: a restarted container is pid 1 again, and two containers sharing the directory on a
  volume may both be pid 1 at once. The pid decides only for a file without a lock (written
  by an earlier version, or where the file system has no locks): its process is gone when no
  process has its pid, or when it is this process's pid with a prefix this process never had.
- **The action set**: the last one received, so that a restarted worker refuses a blocked
  client from its first request, before it reaches the collector.

Everything here runs on the flusher thread or at exit, never on the request path. An error
of the disk (full, read-only) turns the spool off for the process, with one warning.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

try:
    import fcntl
except ImportError:  # Windows: no locks, the pid decides
    _flock: Callable[[int, int], Any] | None = None
    _EXCLUSIVE = 0
else:
    _flock = fcntl.flock
    _EXCLUSIVE = fcntl.LOCK_EX | fcntl.LOCK_NB

__all__ = [
    "MAX_SPOOL_BYTES",
    "Spool",
    "default_directory",
    "destination_key",
    "restored_actions",
]

logger = logging.getLogger("sqreen")

MAX_SPOOL_BYTES: Final = 64 * 1024 * 1024
MAX_ACTIONS_BYTES: Final = 16 * 1024 * 1024
_SAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_BATCH: Final = re.compile(r"([0-9]+)-([0-9a-f]+)-([0-9]+)\.batch")
_LOCK: Final = re.compile(r"([0-9]+)-([0-9a-f]+)\.lock")
#: The prefixes this process's spools have had (a client replaced by another keeps its own).
_PREFIXES: set[str] = set()


def destination_key(endpoint: str | None, token: str | None) -> str:
    """Where batches go and with which key, as 16 hex digits (a digest: the token is not
    written in a path)."""
    return hashlib.sha256(f"{endpoint or ''}\n{token or ''}".encode()).hexdigest()[:16]


def default_directory(app_name: str, destination: str) -> Path:
    """The spool of ``app_name`` for ``destination`` (:func:`destination_key`)."""
    base = Path(tempfile.gettempdir()) / f"sqreen-{os.getuid() if hasattr(os, 'getuid') else 0}"
    return base / f"{_SAFE.sub('_', app_name)[:64] or 'app'}-{destination}"


class Spool:
    def __init__(self, directory: str | os.PathLike[str], prefix: str) -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        _PREFIXES.add(prefix)
        # Names drawn from a counter: the exit delivery and a thread tracking after it write
        # at the same time, and two batches must never get one name.
        self._n = itertools.count(1)
        self.enabled = True
        self.dropped = 0
        self._release: weakref.finalize[Any, Any] | None = None  # closes the lock we hold
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            self._disable(exc)

    def _disable(self, exc: OSError) -> None:
        if self.enabled:
            self.enabled = False
            logger.warning("sqreen: the spool at %s is off: %s", self.directory, exc)

    def after_fork_in_child(self, prefix: str) -> None:
        if self._release is not None:  # the child's copy of the parent's lock: the parent's
            self._release()
            self._release = None
        self.prefix = prefix
        _PREFIXES.add(prefix)
        self._n = itertools.count(1)

    def _hold(self) -> None:
        """Take this process's lock, before its first batch file (see the module's text)."""
        if self._release is not None or _flock is None:
            return
        path = self.directory / f"{os.getpid()}-{self.prefix}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return
        try:
            _flock(fd, _EXCLUSIVE)
        except OSError:  # no locks here: leave no lock file, the pid decides
            os.close(fd)
            path.unlink(missing_ok=True)
            return
        self._release = weakref.finalize(self, os.close, fd)
        self._release.atexit = False  # held until the process ends

    # -- batches ----------------------------------------------------------------------------

    def close(self) -> None:
        """At shutdown: with no batch of ours left, our lock goes (its file too); a batch
        written after takes it again."""
        if self._release is None:
            return
        mine = f"{os.getpid()}-{self.prefix}-"
        try:
            if any(p.name.startswith(mine) for p in self._files()):
                return
            (self.directory / f"{os.getpid()}-{self.prefix}.lock").unlink(missing_ok=True)
        except OSError:
            pass
        self._release()
        self._release = None

    def write(self, events: list[bytes]) -> str | None:
        """Keep a batch on disk; return its name (None when the spool is off)."""
        if not self.enabled or not events:
            return None
        self._hold()
        name = f"{os.getpid()}-{self.prefix}-{next(self._n)}.batch"
        try:
            _atomic_write(self.directory / name, b"\n".join(events) + b"\n")
            self._bound()
        except OSError as exc:
            self._disable(exc)
            return None
        return name

    def remove(self, name: str | None) -> None:
        if name is None or not self.enabled:
            return
        try:
            (self.directory / name).unlink(missing_ok=True)
        except OSError as exc:
            self._disable(exc)

    def orphans(self) -> Iterator[tuple[str, list[bytes]]]:
        """Claim and read the batches of processes that are gone, oldest first: (the name
        to remove once delivered, the events)."""
        if not self.enabled:
            return
        mine = os.getpid()
        gone: dict[str, int] = {}  # the locks of processes that are gone, held while claiming
        alive: set[str] = set()
        try:  # one listing: a file written after it is of a process that lives
            paths = list(self.directory.iterdir())
        except OSError:
            return
        try:
            for lock in paths:
                match = _LOCK.fullmatch(lock.name)
                if match is None or match[2] == self.prefix:
                    continue
                fd = _take(lock)
                if fd is not None and fd < 0:
                    alive.add(f"{match[1]}-{match[2]}")
                elif fd is not None:
                    gone[f"{match[1]}-{match[2]}"] = fd
            for path in sorted(paths, key=_mtime):
                match = _BATCH.fullmatch(path.name)
                if match is None:
                    continue
                owner = f"{match[1]}-{match[2]}"
                if owner in alive or (owner not in gone and not _gone(match, mine)):
                    continue
                # Renamed as ours (atomic: only one process gets it), re-claimable if we die too.
                self._hold()
                claimed = path.with_name(f"{mine}-{self.prefix}-{next(self._n)}.batch")
                try:
                    os.rename(path, claimed)
                    data = claimed.read_bytes()
                except OSError:
                    continue  # another process claimed it first
                events = [line for line in data.split(b"\n") if line]
                if events:
                    yield claimed.name, events
                else:
                    claimed.unlink(missing_ok=True)
        finally:
            for owner, fd in gone.items():  # their files are ours now: their locks go
                try:
                    (self.directory / f"{owner}.lock").unlink(missing_ok=True)
                except OSError:
                    pass
                os.close(fd)

    def _files(self) -> list[Path]:
        try:
            files = [p for p in self.directory.iterdir() if p.name.endswith(".batch")]
        except OSError:
            return []
        return sorted(files, key=_mtime)

    def _bound(self) -> None:
        files = self._files()
        total = sum(_size(p) for p in files)
        while files and total > MAX_SPOOL_BYTES:
            oldest = files.pop(0)
            total -= _size(oldest)
            try:
                count = oldest.read_bytes().count(b"\n")
                oldest.unlink()
            except OSError:
                continue
            self.dropped += count
            logger.warning(
                "sqreen: spool over %d bytes: %d oldest events dropped", MAX_SPOOL_BYTES, count
            )

    # -- the action set ---------------------------------------------------------------------

    def save_actions(self, actions: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            _atomic_write(self.directory / "actions.json", json.dumps(actions).encode())
        except (OSError, TypeError, ValueError) as exc:
            if isinstance(exc, OSError):
                self._disable(exc)

    def load_actions(self) -> Any:
        if not self.enabled:
            return None
        path = self.directory / "actions.json"
        try:
            if path.stat().st_size > MAX_ACTIONS_BYTES:
                return None
            return json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError):
            return None


def restored_actions(saved: Any, now: float) -> dict[str, Any] | None:
    """The action set a spool kept (``{"saved_at", "actions"}``), expiries moved on by the
    time since, the expired ones left out; None when there is none."""
    if not isinstance(saved, dict) or not isinstance(saved.get("actions"), dict):
        return None
    actions = dict(saved["actions"])
    saved_at = saved.get("saved_at")
    elapsed = max(0.0, now - saved_at) if isinstance(saved_at, int | float) else 0.0
    items = []
    for item in actions.get("items") or ():
        expires = item.get("expires_in") if isinstance(item, dict) else None
        if isinstance(expires, int | float) and not isinstance(expires, bool):
            if expires <= elapsed:
                continue
            item = {**item, "expires_in": expires - elapsed}
        items.append(item)
    actions["items"] = items
    return actions


def _atomic_write(path: Path, data: bytes) -> None:
    # A name of the thread's own: the flusher and the action long-poll may save the action
    # set at once, and a shared name made one's rename fail (and disable the spool).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _take(path: Path) -> int | None:
    """Another process's lock: its descriptor when we took it (that process is gone), -1 when
    a process holds it (alive), None when locks cannot be had here (the pid decides)."""
    if _flock is None:
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        _flock(fd, _EXCLUSIVE)
    except BlockingIOError:
        os.close(fd)
        return -1
    except OSError:
        os.close(fd)
        return None
    return fd


def _gone(match: re.Match[str], mine: int) -> bool:
    """Whether the process that wrote a batch without a lock is gone: no process has its pid,
    or it is ours with a prefix this process never had (a previous process of the same pid:
    a restarted container)."""
    pid = int(match[1])
    if pid == mine:
        return match[2] not in _PREFIXES
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
