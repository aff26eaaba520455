"""What the parts of :class:`~._sql.SqlStorage` mixed into it (playbooks' and users' queries)
use of it: its clock, its write transactions and its reads."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["SqlPart"]


class SqlPart:
    """A base of the classes mixed into :class:`~._sql.SqlStorage`, which implements these."""

    def now(self) -> datetime:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError
