"""Work tied to the events' transaction: the playbooks' windows, written before its commit.

Each batch's events were committed in one transaction, then the playbooks' windows in a
second (:meth:`~._playbooks.PlaybookQueries.update_windows`). On SQLite, with ``--workers
2``, that is two turns at the write lock a batch for each process, and each waits for the
other's: a second transaction of one row a turn cost 6.4 % of events/s
(``bench/bench_ingest_ab.py --against``). A :class:`~._prepared.TiedStep` given to
:meth:`~._sql.SqlStorage.store_prepared` runs in the events' transaction instead, after
their rows, in a savepoint; whatever would begin a transaction of its own meanwhile, on
this thread, writes in it (:meth:`TiedSteps._tied_cursor`).

What the step raises rolls back the savepoint, not the events. When the transaction fails
after the step ran (its COMMIT, or a later batch's rows), the step and every part of the
storage that learnt from it forget it (:meth:`TiedSteps._untie`): nothing it wrote is
stored. PostgreSQL ties the hits alone (:meth:`~._after_commit.AfterCommit.store_hits`):
they are counted after the commit, and what may fire decided in a transaction of its own
(the windows' whole transaction tied there held every key's lock to the events' commit:
side by side, no gain).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from ._parts import SqlPart
from ._prepared import TiedStep
from .model import InsertResult

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["TiedSteps"]

logger = logging.getLogger("sqreen.server")


class TiedSteps(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    #: Whether :meth:`~._sql.SqlStorage.store_prepared` runs a ``tied`` step in its
    #: transaction (SQLite's and PostgreSQL's).
    _TIES = False
    #: The thread running a tied step, and the cursor of its transaction.
    _tied: tuple[int, Cursor] | None = None
    #: Whether the last tied step wrote the windows there (:meth:`_tied_write`).
    _tied_wrote = False

    def _tied_cursor(self) -> Cursor | None:
        tied = self._tied
        return tied[1] if tied is not None and tied[0] == threading.get_ident() else None

    def _tied_write(self) -> AbstractContextManager[Cursor] | None:
        """The windows' writes in the tied step's transaction, when this thread runs one
        (what they wrote is then forgotten should it fail: :meth:`_untie`), else None."""
        cur = self._tied_cursor()
        if cur is None:
            return None
        self._tied_wrote = True
        return nullcontext(cur)

    def _not_tied(self) -> None:
        """Raise where a transaction of its own is begun in a tied step, on its thread: it
        would wait for the write lock that thread holds, for ever, and every process with
        it (what writes in a tied step writes with :meth:`_tied_cursor`)."""
        if self._tied_cursor() is not None:
            raise RuntimeError("a transaction begun in the events' own (a tied step)")

    def _tie(
        self, cur: Cursor, tied: TiedStep | None, results: Sequence[InsertResult | Exception]
    ) -> bool:
        """Run ``tied`` (None: nothing) in a savepoint of ``cur``'s transaction: whether it
        returned (else what it raised is logged, what it wrote there rolled back, and what
        was learnt of it forgotten). Once it returned True, the caller forgets the step
        (:meth:`_untie`) should the transaction fail."""
        if tied is None:
            return False
        cur.execute("SAVEPOINT tied")
        self._tied = (threading.get_ident(), cur)
        self._tied_wrote = False
        try:
            tied.run(results)
        except Exception:
            logger.exception("sqreen: the playbooks' step in the events' transaction failed")
            self._untie(tied)
            # (should these fail, the transaction is gone: the events' failure then)
            cur.execute("ROLLBACK TO tied")
            cur.execute("RELEASE tied")
            return False
        finally:
            self._tied = None
        try:
            cur.execute("RELEASE tied")
        except BaseException:
            self._untie(tied)  # (the transaction fails with it)
            raise
        return True

    def _untie(self, tied: TiedStep) -> None:
        """What ``tied`` wrote is not stored (its savepoint, or the whole transaction, rolled
        back): the storage forgets what it learnt of it, and so does the step."""
        if self._tied_wrote:  # (else nothing was learnt: a body that breaks the playbooks'
            # plan costs no reading of the hits again)
            self._tied_undone()
        try:
            tied.undone()
        except Exception:
            logger.exception("sqreen: the playbooks' step in the events' transaction failed")
