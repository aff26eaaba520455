"""A transport that appends events to a JSON-lines file (``file:///path/events.jsonl``).

Each event is one line written with a single ``os.write`` on an ``O_APPEND`` descriptor: the
kernel appends it atomically, so several worker processes sharing the file never interleave.
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
            for event in events:
                os.write(fd, event + b"\n")
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
