"""Users' traits: what ``identify(user, traits=...)`` said last of each user.

One row a user in ``users``, keyed by the canonical JSON of their identifiers (sorted,
compact, ASCII: :func:`user_key`), holding the latest traits (by the records' own time, so
that a batch retried late does not bring old traits back) and when the user was first and
last seen identifying. The ingest pipeline writes it for ``sq.identify`` records, which are
not stored as events; the explorer's event page reads it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

from ..._wire import WireEvent
from ._parts import SqlPart, insert_rows
from ._rows import dumps, event_us, loads
from .model import UserTraits, from_us, to_us

__all__ = ["UserQueries", "UserRow", "user_key"]

#: A key longer than this (16 long identifiers, escaped) is stored as its SHA-256 instead:
#: PostgreSQL refuses a B-tree entry over about 2 700 bytes, and a refused insert would make
#: the SDK retry its whole batch forever.
KEY_MAX: Final = 1024
#: Users a statement (four parameters each: under both databases' limits).
USER_CHUNK: Final = 1000
_UPSERT: Final = (
    " ON CONFLICT (key) DO UPDATE SET "
    "traits_json = CASE WHEN excluded.last_seen >= users.last_seen "
    "THEN excluded.traits_json ELSE users.traits_json END, "
    "first_seen = CASE WHEN excluded.first_seen < users.first_seen "
    "THEN excluded.first_seen ELSE users.first_seen END, "
    "last_seen = CASE WHEN excluded.last_seen > users.last_seen "
    "THEN excluded.last_seen ELSE users.last_seen END"
)


class UserRow(NamedTuple):
    """A row of ``users``."""

    key: str
    traits_json: str
    first_seen: int
    last_seen: int


def user_key(user: Mapping[str, str]) -> str:
    """The ``users`` key of a user's identifiers: their canonical JSON (``{"email":...,
    "uid":...}``, sorted), or ``sha256:<hex>`` of it when over :data:`KEY_MAX` characters."""
    text = dumps(dict(sorted(user.items())))
    if len(text) <= KEY_MAX:
        return text
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


class UserQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    def record_traits(self, records: Sequence[WireEvent]) -> int:
        """Store the traits of ``sq.identify`` records (validated, each with a user; the
        traits in ``properties``) in one transaction: per user, the traits of the latest
        record win unless newer ones are stored already, the first time seen is kept, the
        last one moves forward. Return how many users were written."""
        received = to_us(self.now())
        latest: dict[str, UserRow] = {}
        for record in records:
            if not record["user"]:
                continue
            seen = event_us(record, received)
            key = user_key(record["user"])
            known = latest.get(key)
            if known is None or seen >= known.last_seen:
                first = seen if known is None else min(known.first_seen, seen)
                latest[key] = UserRow(key, dumps(record["properties"]), first, seen)
            elif seen < known.first_seen:
                latest[key] = known._replace(first_seen=seen)
        # In key order: two processes writing the same users lock them in one order.
        rows = sorted(latest.values())
        if not rows:
            return 0
        with self._write() as cur:
            insert_rows(
                cur,
                "INSERT INTO users (key, traits_json, first_seen, last_seen)",
                rows,
                _UPSERT,
                USER_CHUNK,
            )
        return len(rows)

    def get_user(self, user: Mapping[str, str]) -> UserTraits | None:
        """The traits last recorded for exactly these identifiers, or None."""
        found = self._read(
            "SELECT key, traits_json, first_seen, last_seen FROM users WHERE key = ?",
            [user_key(user)],
        )
        for row in map(UserRow._make, found):
            return UserTraits(
                user=dict(user),
                traits=loads(row.traits_json),
                first_seen=from_us(row.first_seen),
                last_seen=from_us(row.last_seen),
            )
        return None
