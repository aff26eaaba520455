"""Whether a database error says the database is away (a file locked, full, unreadable or
replaced; a server down or restarting) rather than a statement's own failure: the storage
gives up on what cannot pass now, and :mod:`sqreen.server.unavailable` answers 503 for it.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from typing import Final

from ._wal import REPLACED

__all__ = ["OncePer", "away", "unavailable", "what_failed"]

#: What SQLite says when the file, not the SQL, is the problem.
_SQLITE_SAYS: Final = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "unable to open database file",
    "database or disk is full",
    "attempt to write a readonly database",
    REPLACED,
)


def what_failed(exc: BaseException) -> str:
    """What ``exc`` says of the database in words that name no path or value: SQLite's
    phrase ("database or disk is full"), else the exception's class."""
    said = str(exc).lower()
    return next((s for s in _SQLITE_SAYS if s in said), type(exc).__name__)


def away(exc: BaseException) -> bool:
    """Whether ``exc`` says the database itself cannot be reached or written now: SQLite's
    file (locked, full, unreadable), PostgreSQL's connection (no SQLSTATE: refused, cut) or
    server (class 08, a connection exception; 57P, shutting down or starting). Not a
    statement's own failure (a timeout, a deadlock, a limit), which :func:`unavailable`
    answers 503 too (a retry may pass) but a periodic job must say as an error."""
    if not unavailable(exc):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith(("08", "57P"))


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached or written now (not a bug)."""
    if isinstance(exc, sqlite3.OperationalError):
        said = str(exc).lower()
        return any(s in said for s in _SQLITE_SAYS)
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.OperationalError)


class OncePer:
    """:meth:`due` once every ``seconds`` at most for each ``what`` (a line said once a
    minute a reason: a locked database said first must not hide a full disk)."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self._at: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, what: str = "") -> bool:
        now = time.monotonic()
        with self._lock:
            at = self._at.get(what)
            if at is not None and now - at < self.seconds:
                return False
            self._at[what] = now
            return True
