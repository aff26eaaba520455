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
- **The action set**: the last one received, so that a restarted worker refuses a blocked
  client from its first request, before it reaches the collector.

Everything here runs on the flusher thread or at exit, never on the request path. An error
of the disk (full, read-only) turns the spool off for the process, with one warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

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
        self._n = 0
        self.enabled = True
        self.dropped = 0
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            self._disable(exc)

    def _disable(self, exc: OSError) -> None:
        if self.enabled:
            self.enabled = False
            logger.warning("sqreen: the spool at %s is off: %s", self.directory, exc)

    def after_fork_in_child(self, prefix: str) -> None:
        self.prefix = prefix
        self._n = 0

    # -- batches ----------------------------------------------------------------------------

    def write(self, events: list[bytes]) -> str | None:
        """Keep a batch on disk; return its name (None when the spool is off)."""
        if not self.enabled or not events:
            return None
        self._n += 1
        name = f"{os.getpid()}-{self.prefix}-{self._n}.batch"
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
        for path in self._files():
            match = _BATCH.fullmatch(path.name)
            if match is None or int(match[1]) == mine or _alive(int(match[1])):
                continue
            self._n += 1
            # Renamed as ours (atomic: only one process gets it), re-claimable if we die too.
            claimed = path.with_name(f"{mine}-{self.prefix}-{self._n}.batch")
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


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
