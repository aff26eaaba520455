"""The Event Explorer's logins: failed attempts by client, and the sessions they open.

``login_failures`` holds one row an attempt a client was allowed (reserved before its
password is hashed, so it counts as failed until it succeeds). The reservation counts the
client's rows in the window and adds one in a single transaction, holding the client's key:
attempts racing each other, in one process or in several, are counted one after the other,
and no more than the limit is ever checked. Old rows are purged separately.

``explorer_sessions`` holds the sessions that logins opened, by the SHA-256 of their token
(the cookie carries the token, signed): a session is valid while its row is there and not
expired. Logging out deletes the row; a new admin password deletes every row in the same
transaction that stores it, and a login opens its session only if the password it checked
is still the one stored, so no session opened with an old password survives the change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ._parts import SqlPart
from .model import to_us

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["LoginQueries"]

_US: Final = 1_000_000
#: The named lock held by whatever opens sessions or ends them all (see the module's doc).
SESSIONS_LOCK: Final = "sqreen.explorer.sessions"


class LoginQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    def _hold(self, cur: Cursor, name: str) -> None:
        """Hold the lock ``name`` until the transaction ends (a dialect's business: nothing
        to do where the transaction is the only writer, as in SQLite)."""

    def reserve_login(self, key: str, limit: int, window: float) -> float:
        span = int(window * _US)
        with self._write() as cur:
            self._hold(cur, "sqreen.login\x1f" + key)
            # Read once the key is held: a time read before could be older than the attempts
            # stored while this one waited (and the wait told longer than the window).
            now = to_us(self.now())
            count, oldest = cur.execute(
                "SELECT count(*), min(at) FROM login_failures WHERE key = ? AND at > ?",
                (key, now - span),
            ).fetchone()
            if count >= limit:
                return max(1.0, (int(oldest) + span - now) / _US)
            cur.execute("INSERT INTO login_failures (key, at) VALUES (?, ?)", (key, now))
        return 0.0

    def clear_login_failures(self, key: str) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM login_failures WHERE key = ?", (key,))

    def purge_login_failures(self, window: float) -> int:
        with self._write() as cur:
            cur.execute(
                "DELETE FROM login_failures WHERE at <= ?",
                (to_us(self.now()) - int(window * _US),),
            )
            return int(cur.rowcount)

    def open_session(self, token_hash: str, max_age: float, setting: str, expected: str) -> bool:
        now = to_us(self.now())
        with self._write() as cur:
            self._hold(cur, SESSIONS_LOCK)
            row = cur.execute("SELECT value FROM settings WHERE key = ?", (setting,)).fetchone()
            (value,) = row if row is not None else (None,)
            if value != expected:
                return False
            cur.execute("DELETE FROM explorer_sessions WHERE expires_at <= ?", (now,))
            cur.execute(
                "INSERT INTO explorer_sessions (id, created_at, expires_at) VALUES (?, ?, ?)",
                (token_hash, now, now + int(max_age * _US)),
            )
        return True

    def session_active(self, token_hash: str) -> bool:
        rows = self._read(
            "SELECT 1 FROM explorer_sessions WHERE id = ? AND expires_at > ?",
            (token_hash, to_us(self.now())),
        )
        return bool(rows)

    def end_session(self, token_hash: str) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM explorer_sessions WHERE id = ?", (token_hash,))

    def set_setting_ending_sessions(self, key: str, value: str) -> None:
        with self._write() as cur:
            self._hold(cur, SESSIONS_LOCK)
            cur.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
            cur.execute("DELETE FROM explorer_sessions")
