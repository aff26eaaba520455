"""The schema's version: migrating to this code's (:meth:`SchemaParts.migrate`), or only
checking it (:meth:`SchemaParts.check_schema`, for read-only commands)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._parts import SqlPart
from ._schema import Step

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["SchemaParts", "newer"]

logger = logging.getLogger("sqreen.server")


def newer(found: int, known: int) -> str:
    """Why a database of schema ``found`` is refused by code that knows ``known``."""
    return (
        f"the database schema is version {found}, newer than this sqreen ({known}): "
        "upgrade sqreen-sdk"
    )


class SchemaParts(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    #: Ordered schema migrations: each a list of steps (statements, or functions of the
    #: cursor); index + 1 is its version.
    MIGRATIONS: Sequence[Sequence[Step]] = ()

    def _lock_schema(self, cur: Cursor) -> None:
        """Serialise migrations between processes (inside the migration transaction)."""

    def check_schema(self) -> int:
        """Refuse a schema other than this code's, migrating nothing (read-only commands:
        a newer CLI must not move a running older collector's database to its schema)."""
        try:
            found = self._read("SELECT version FROM schema_version")
        except Exception:  # no such table: nothing of sqreen's, or a file never migrated
            found = []
        current = next((int(version) for (version,) in found), 0)
        if current > len(self.MIGRATIONS):
            raise RuntimeError(newer(current, len(self.MIGRATIONS)))
        if current < len(self.MIGRATIONS):
            raise RuntimeError(
                f"the database schema is version {current}, older than this sqreen's "
                f"({len(self.MIGRATIONS)}): start `sqreen serve` to upgrade it (after stopping "
                "a collector of the older version), then run this again"
            )
        return current

    def migrate(self) -> int:
        """Bring the schema up to date; return its version. Refuses a newer schema."""
        with self._write() as cur:
            self._lock_schema(cur)
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = cur.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                cur.execute("INSERT INTO schema_version (version) VALUES (0)")
            (current,) = row or (0,)
            if current > len(self.MIGRATIONS):
                raise RuntimeError(newer(current, len(self.MIGRATIONS)))
            for version in range(current + 1, len(self.MIGRATIONS) + 1):
                for step in self.MIGRATIONS[version - 1]:
                    if isinstance(step, str):
                        cur.execute(step)
                    else:
                        step(cur)
                cur.execute("UPDATE schema_version SET version = ?", (version,))
        if 0 < current < len(self.MIGRATIONS):  # (a new database is not an upgrade)
            logger.warning(
                "sqreen: database schema upgraded from version %d to %d (a collector of an "
                "older version sharing it must be stopped)",
                current,
                len(self.MIGRATIONS),
            )
        return len(self.MIGRATIONS)
