"""The live forwarder of ``sqreen serve --export URL``: stored events and alerts, sent in
batches after a cursor kept in the database, at least once.

A thread, off the ingest path: it reads what ingest committed (a read connection; on SQLite
WAL readers never wait for the writer) and writes only its cursor, one small transaction a
batch. An endpoint that is down costs ingest nothing: the thread waits, backing off from
0.5 s to :data:`MAX_BACKOFF`, and sends the same batch again; the cursor moves only after
the endpoint acknowledged, so a restart or an outage resends at most the batch in flight.

Events and alerts are two lanes, each with its cursor and its backoff: alerts never wait
behind a batch of events that keeps failing (nor events behind alerts). A batch the
endpoint refuses for what it holds is split, and a record it refuses alone, or that cannot
be encoded, is set aside rather than sent for ever (:mod:`.delivery`).

One forwarder sends across ``--workers N``: every process runs one, and only the holder of
the destination's lease (a row of ``export_cursors``, renewed every few seconds, given up
at a clean stop, taken over :data:`LEASE_TTL` after a holder died) reads and sends.

Commit order: on SQLite events commit in seq order (one writer), so the cursor never passes
an event still being written. On PostgreSQL a lower seq can commit after a higher one (by
the length of a transaction): when a page holds rows past the marks read last, the
forwarder reads new ones (:meth:`~..storage.base.Storage.committed_marks`, which waits for
the inserts in flight) and the page again, and sends only rows up to the marks.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import takewhile
from typing import Final, TypeVar

from ..._threads import start_thread
from ..storage import Alert, Storage, StoredEvent
from .delivery import SET_ASIDE, SetAside, deliver
from .records import Kind
from .sinks import Destination, Sink, SinkError, open_sink

__all__ = ["BATCH", "LEASE_TTL", "MAX_BACKOFF", "ExportLag", "Forwarder", "export_lag"]

logger = logging.getLogger("sqreen.server")

R = TypeVar("R")

#: Records a request at most (an OTLP request of 500 events is ~400 kB).
BATCH: Final = 500
#: Seconds a lease holds without renewal; it is renewed every third of that.
LEASE_TTL: Final = 15.0
MAX_BACKOFF: Final = 30.0
FIRST_BACKOFF: Final = 0.5


@dataclass(frozen=True, slots=True)
class ExportLag:
    """How far a destination is behind: events stored and alerts raised after its cursors
    (seqs and ids are counted: an upper bound where retention or duplicates left gaps)."""

    events: int
    alerts: int


def _names(destination: str) -> tuple[str, dict[Kind, str]]:
    return f"lease {destination}", {
        "event": f"events {destination}",
        "alert": f"alerts {destination}",
    }


def export_lag(storage: Storage, destination: str) -> ExportLag:
    """The lag of the forwarder to ``destination`` (:attr:`Destination.name`), from the
    database: any process can ask, whichever holds the lease (for the metrics)."""
    _, cursors = _names(destination)
    newest = storage.query_events(limit=1)
    last_seq = newest[0].seq if newest else 0
    return ExportLag(
        events=max(0, last_seq - storage.export_cursor(cursors["event"])),
        alerts=max(0, storage.last_alert_id() - storage.export_cursor(cursors["alert"])),
    )


class Forwarder:
    """Sends what ``storage`` holds to ``destination``, in a thread (:meth:`start`)."""

    def __init__(
        self,
        storage: Storage,
        destination: Destination,
        *,
        sink: Sink | None = None,
        batch: int = BATCH,
        interval: float = 1.0,
        lease_ttl: float = LEASE_TTL,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.storage = storage
        self.destination = destination
        self.sink = sink or open_sink(destination)
        self.batch = batch
        self.interval = interval
        self._marks = (0, 0)  # (event seq, alert id): every row up to them is committed
        self.lease_ttl = lease_ttl
        self.max_backoff = max_backoff
        self.lease, self.cursors = _names(destination.key)
        #: The cursors as named before a user or a query told destinations apart (by
        #: :attr:`~.sinks.Destination.name`): where the new ones were never moved, the
        #: forwarder goes on from these, not from the first record.
        self._before = None if destination.key == destination.name else _names(destination.name)[1]
        self.holder = secrets.randbelow(2**62) + 1
        self.sent = 0
        self.failures = 0
        self.set_aside = 0
        self._positions: dict[Kind, int] | None = None  # read when the lease is taken
        self._renewed = 0.0
        # Each lane's backoff, when it may send again, and whether the endpoint took the
        # last batch it was sent (evidence that a record it refuses alone is at fault).
        self._backoff: dict[Kind, float] = {"event": 0.0, "alert": 0.0}
        self._retry_at: dict[Kind, float] = {"event": 0.0, "alert": 0.0}
        self._took: dict[Kind, bool] = {"event": False, "alert": False}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = start_thread(self._run, "sqreen-export")

    def close(self, timeout: float = 5.0) -> None:
        """Stop (a batch in flight ends within the sink's timeout) and give the lease up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            if self._positions is not None:
                self.storage.release_export_lease(self.lease, self.holder)
        except Exception:
            logger.exception("sqreen: export lease not released")
        self.sink.close()

    def lag(self) -> ExportLag:
        return export_lag(self.storage, self.destination.key)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._hold():
                    self._stop.wait(self.lease_ttl / 3)
                    continue
                pause = self.step()
            except Exception:  # the database: the next look may find it back
                logger.exception("sqreen: export to %s", self.destination.name)
                pause = self.interval
            if pause > 0:
                self._stop.wait(pause)

    def _hold(self) -> bool:
        """Whether this process holds the lease (renewed when a third of it has passed)."""
        if self._positions is not None and time.monotonic() - self._renewed < self.lease_ttl / 3:
            return True
        if not self.storage.take_export_lease(self.lease, self.holder, self.lease_ttl):
            self._positions = None
            return False
        self._renewed = time.monotonic()
        if self._positions is None:
            self._positions = {k: self._cursor(k) for k in self.cursors}
        return True

    def _cursor(self, kind: Kind) -> int:
        """Where ``kind``'s lane stands: its cursor, else the one of the same destination
        named as before (a cursor never moved is at 0, the first record)."""
        found = self.storage.export_cursor(self.cursors[kind])
        if found == 0 and self._before is not None:
            found = self.storage.export_cursor(self._before[kind])
        return found

    def step(self) -> float:
        """Send a batch of events and one of alerts, each if its lane has any and is not
        backing off; the seconds to wait before the next step (0 when a batch moved)."""
        pause = self.interval
        for kind in ("event", "alert"):
            if self._positions is None:  # the lease was lost
                break
            wait = self._retry_at[kind] - time.monotonic()
            if wait > 0:
                pause = min(pause, wait)
                continue
            try:
                moved = self._lane(kind)
            except SinkError as exc:
                self.failures += 1
                backoff = min(max(self._backoff[kind] * 2, FIRST_BACKOFF), self.max_backoff)
                self._backoff[kind] = backoff
                self._retry_at[kind] = time.monotonic() + backoff
                pause = min(pause, backoff)
                logger.warning(
                    "sqreen: export of %ss to %s failed (%s); again in %.1f s",
                    kind,
                    self.destination.name,
                    exc,
                    backoff,
                )
                continue
            if self._backoff[kind]:  # said as its failures were
                logger.warning(
                    "sqreen: export of %ss to %s works again", kind, self.destination.name
                )
            self._backoff[kind] = 0.0
            if moved:
                pause = 0.0
        return pause

    def _lane(self, kind: Kind) -> int:
        """Deliver one batch of ``kind``: how many records the cursor passed (delivered or
        set aside); :class:`SinkError` when the rest of the batch is to be sent again."""
        assert self._positions is not None
        after = self._positions[kind]
        page: list[StoredEvent] | list[Alert]
        if kind == "event":
            page = self._upto(
                0,
                lambda: self.storage.scan_events(after_seq=after, limit=self.batch),
                lambda e: e.seq,
            )
        else:
            page = self._upto(
                1,
                lambda: self.storage.scan_alerts(after_id=after, limit=self.batch),
                lambda a: a.id,
            )
        if not page:
            return 0
        done = deliver(self.sink, [(kind, r) for r in page], self._took[kind])
        self._took[kind] = done.took_last
        for record in done.set_aside:
            self._put_aside(kind, page[record.index], record)
        if done.settled:
            self._move(kind, _position(page[done.settled - 1]))
            self.sent += done.delivered
        if done.error is not None:
            raise done.error
        return done.settled

    def _put_aside(self, kind: Kind, record: StoredEvent | Alert, why: SetAside) -> None:
        self.set_aside += 1
        SET_ASIDE.labels(kind, why.reason).inc()
        logger.warning(
            "sqreen: export to %s: %s %s %d set aside, not sent (%s: %s)",
            self.destination.name,
            kind,
            "seq" if kind == "event" else "id",
            _position(record),
            why.reason,
            why.detail,
        )

    def _upto(self, mark: int, read: Callable[[], list[R]], key: Callable[[R], int]) -> list[R]:
        """The page ``read`` gives, up to the marks (``mark``: 0 events, 1 alerts). A page
        holding rows past the marks may have passed a row still being written: the marks
        are read again (which waits for it), and then the page."""
        page = read()
        if page and key(page[-1]) > self._marks[mark]:
            self._marks = self.storage.committed_marks()
            page = read()
        return list(takewhile(lambda r: key(r) <= self._marks[mark], page))

    def _move(self, kind: Kind, position: int) -> None:
        assert self._positions is not None
        if not self.storage.move_export_cursor(
            self.lease, self.holder, self.cursors[kind], position
        ):
            self._positions = None  # another process took over: it resends from its cursor
            raise SinkError("lease lost")
        self._positions[kind] = position
        self._renewed = time.monotonic()


def _position(record: StoredEvent | Alert) -> int:
    """Where a cursor stands once ``record`` is passed: an event's seq, an alert's id."""
    return record.seq if isinstance(record, StoredEvent) else record.id
