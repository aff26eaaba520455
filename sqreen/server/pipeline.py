"""The ingest pipeline: parse -> enrich -> store -> after-store hooks, then the reply.

``create_app`` builds one :class:`IngestPipeline` and runs each ``POST /v1/events`` body through
it on a worker thread, one turn at a time per process (see ``_api_sdk._slot``); the bodies
that waited for a turn go through it together (:meth:`IngestPipeline.ingest_many`,
:mod:`._ingest_queue`), each one as below, their events stored in one transaction:

1. **parse**: the envelope, then each event with :func:`sqreen._wire.parse_event`, the SDK's
   own rules; a mixed batch keeps its valid events and lists the others by index. A name in
   :data:`sqreen.events.ALIASES` (``AUTH_LOGIN_SUCCESS``, ``login.success``...) is stored as
   its standard name; one the collector raises itself (``security.impossible_travel``,
   :data:`sqreen.events.DERIVED_EVENTS`) is refused, as an invalid event. A body whose
   events are all valid takes a fast path in C (:mod:`.fastparse`) with the same results.
2. **enrich**: each :class:`Enricher` in turn may add fields to each valid event
   (:attr:`Batch.enrichment`); they are stored with it. Local data only, never a network
   call: enrichers delay the reply and the next body of this process. An enricher may also
   add an event it derived from the batch (:meth:`Batch.add_derived`: impossible travel),
   stored and announced with the others but not counted in the SDK's reply.
3. **store**: one transaction (a group's bodies share it), committed before anything else happens
   (:meth:`~.storage.EventStore.insert_events`), which says which events were new (ids are
   deduplicated among the events of the API key the body came with).
   ``sq.identify`` records (``identify(user, traits=...)``) are **not stored as events**:
   parse sets them apart and their traits go to the user's row
   (:meth:`~.storage.ControlStore.record_traits`, a second transaction, idempotent), never to
   enrichers or hooks; the reply counts them as accepted.
4. **after-store hooks**: each :class:`AfterStoreHook` is told about exactly the events this
   body newly stored, with their seq, after the commit and outside the write lock (never the
   duplicates of a retried batch). A hook with ``tied_batches`` (the playbooks) is told in
   the events' own transaction instead, before its commit, where the storage can (SQLite:
   one turn at the write lock a batch, not two; :mod:`._tied_hooks`), and what it then
   says of its alerts waits for the commit. A playbook hook may create a block: the reply, built
   last, already carries it.

An enricher or a hook that raises is logged and skipped: the events are stored (without what
a failed enricher did not add; without any enrichment when what was added is not JSON) and
the SDK gets its reply, so that a bug there never makes an SDK retry, or drop, a batch.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, cast

from .._event import InvalidEvent
from .._wire import IDENTIFY, WireEvent, parse_envelope, parse_event
from ._tied_hooks import TiedHook, TiedHooks
from .errors import ApiError
from .fastjson import measure
from .fastparse import parse_batch
from .ingest import Held, held_actions, parse_json, standard_name, text
from .storage import InsertResult, PreparedEvents, Storage, StoredEvent, new_events

__all__ = ["AfterStoreHook", "Batch", "Enricher", "IngestPipeline"]

logger = logging.getLogger("sqreen.server")


@dataclass(slots=True)
class Batch:
    """The valid events of one body on their way to storage, and what the reply reports.

    ``enrichment`` is aligned with ``events``: one dict an event, for enrichers to add
    JSON-ready fields to (``batch.enrichment[i]["geo"] = {...}``); stored with the event.
    """

    app: str | None
    host: str | None
    events: list[WireEvent]
    enrichment: list[dict[str, Any]]
    rejected: list[dict[str, Any]] = field(default_factory=list)
    #: The rule each rejected event broke (``InvalidEvent.rule``), aligned with ``rejected``.
    reasons: list[str] = field(default_factory=list)
    #: The ``sq.identify`` records (a user's traits), kept out of ``events``.
    identities: list[WireEvent] = field(default_factory=list)
    #: The action set version the sending SDK holds (its reply says "unchanged" if current).
    known: int | None = None
    #: The API key the body came with: its events' ids are deduplicated among that key's.
    key_id: int = 0
    #: Whether the sending SDK takes a diff of the action set.
    diff: bool = False
    #: How many events at the end of ``events`` an enricher derived (:meth:`add_derived`):
    #: stored and announced like the others, but not counted in the SDK's reply.
    derived: int = 0
    #: The batches of the same turn stored before this one (:meth:`IngestPipeline.ingest_many`),
    #: in order: not in the database yet while this one is enriched, though they would be
    #: were the bodies going one at a time (an enricher that looks back looks there too).
    earlier: Sequence[Batch] = ()
    #: Impossible travel's placed logins, stored with their events: ``(position in events,
    #: *row)`` (:meth:`~.storage.EventStore.prepare_events`).
    places: list[tuple[Any, ...]] = field(default_factory=list)
    #: What an enricher found in this batch, kept for the batches after it in its turn
    #: (impossible travel's logins: each body's located once, not once a body after it).
    notes: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[WireEvent, dict[str, Any]]]:
        """Each event with its enrichment dict."""
        return zip(self.events, self.enrichment, strict=True)

    def add_derived(self, event: WireEvent, fields: dict[str, Any]) -> None:
        """Append an event the collector made from the batch (``security.impossible_travel``),
        with its enrichment: enrichers after this one see it too."""
        self.events.append(event)
        self.enrichment.append(fields)
        self.derived += 1


class Enricher(Protocol):
    """Adds fields to the parsed events of a batch before they are stored."""

    def __call__(self, batch: Batch) -> None: ...


class AfterStoreHook(Protocol):
    """Told about the events one batch newly stored (never duplicates), in the order sent,
    each with its ``seq``, after they were committed. Called only when there are some.

    A hook with a ``stored_batches(pairs)`` method is called that way instead: each parsed
    batch of a turn with its :class:`~.storage.InsertResult` (``result.new(...)`` pairs the
    new events with their seqs), without the cost of building :class:`~.storage.StoredEvent`
    values (the playbooks' hook reads the wire events directly); should it raise, it is
    called again with each pair alone (:meth:`IngestPipeline.after_store_many`)."""

    def __call__(self, events: Sequence[StoredEvent]) -> None: ...


def _kept(exc: Exception) -> Exception:
    """``exc``, to be kept as a body's outcome, without its traceback (nor those of the
    exceptions it came from). Its frames' locals (a refused body's parsed JSON: 240 MB from
    a 14 KB gzipped body; the body itself, 10 MB, in the caller's frame, which a finished
    frame's ``f_back`` keeps) stayed alive with it, in a cycle with the caller's frame that
    only a full collection breaks, which counts objects, not bytes: a few such bodies took a
    collector to gigabytes, and 40 bodies of 10 MB refused one after another held 550 MB.
    A refusal (:class:`ApiError`) needs no lines; a fault keeps them, as a note, for the
    log."""
    if exc.__traceback__ is None:  # kept already, or never raised
        return exc
    if not isinstance(exc, ApiError):
        exc.add_note("".join(traceback.format_tb(exc.__traceback__)).rstrip())
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
    return exc


class IngestPipeline:
    """Parse, enrich, store and announce one batch (blocking; see the module's docstring)."""

    def __init__(
        self,
        storage: Storage,
        *,
        enrichers: Sequence[Enricher] = (),
        hooks: Sequence[AfterStoreHook] = (),
        actions: Callable[[object], dict[str, Any]] | None = None,
        on_rejected: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self.storage = storage
        #: Told the rules broken by the events each batch rejected (the metrics count them).
        self.on_rejected = on_rejected
        self.enrichers = tuple(enrichers)
        self.hooks = tuple(hooks)
        #: The reply's action set, from the version the SDK holds (default: the whole set).
        self.actions = actions or (lambda known: self.storage.action_set().to_json())

    def __call__(self, body: bytes, *, key_id: int = 0) -> dict[str, Any]:
        """The JSON reply of ``POST /v1/events`` for ``body``, sent with API key ``key_id``
        (an :class:`ApiError` for a body that is not a batch)."""
        reply, held = self.ingest(body, key_id=key_id)
        reply["actions"] = self.actions(held.version)
        return reply

    def ingest(self, body: bytes, *, key_id: int = 0) -> tuple[dict[str, Any], Held]:
        """The reply of ``POST /v1/events`` for ``body`` but its action set, and what the
        SDK says it holds of that: the collector adds it outside the one-body-at-a-time slot
        (read last, after the hooks: a block a playbook just made is in it). Its events'
        ids are deduplicated among those of API key ``key_id``."""
        (outcome,) = self.ingest_many([(body, key_id)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def ingest_many(
        self, bodies: Sequence[tuple[bytes, int]]
    ) -> list[tuple[dict[str, Any], Held] | Exception]:
        """:meth:`ingest` for several ``(body, API key id)``, their events stored in one
        transaction (:meth:`store_many`): each body's outcome in order, its reply or the
        exception that refused it (an :class:`ApiError` for a body that is not a batch).
        Each body is parsed and enriched on its own (an enricher that looks back finds the
        bodies before it in :attr:`Batch.earlier`), the hooks hear of the new events of all
        after the commit (:meth:`after_store_many`), and each reply counts its own events."""
        outcomes: list[tuple[dict[str, Any], Held] | Exception] = []
        parsed: list[tuple[int, Batch]] = []
        for body, key_id in bodies:
            try:
                batch = self.parse(body)
            except Exception as exc:
                outcomes.append(_kept(exc))
                continue
            batch.key_id = key_id
            batch.earlier = [earlier for _, earlier in parsed]
            self.enrich(batch)
            parsed.append((len(outcomes), batch))
            outcomes.append(_PENDING)
        batches = [batch for _, batch in parsed]
        tied = self._tied()
        results = self.store_many(batches, tied)
        self.after_store_many(
            [(batch, r) for batch, r in zip(batches, results, strict=True) if _stored(r)], tied
        )
        for (index, batch), result in zip(parsed, results, strict=True):
            if isinstance(result, Exception):
                outcomes[index] = result
                continue
            if batch.reasons and self.on_rejected is not None:
                self.on_rejected(batch.reasons)
            sent = result.seqs[: len(result.seqs) - batch.derived]
            duplicates = sent.count(None)
            reply = {
                "accepted": len(sent) - duplicates + len(batch.identities),
                "duplicates": duplicates,
                "rejected": batch.rejected,
            }
            outcomes[index] = (reply, Held(batch.known, batch.diff))
        return outcomes

    def parse(self, body: bytes) -> Batch:
        fast = parse_batch(body)
        if fast is not None:  # every event valid: decoded and checked in C (see fastparse)
            batch = Batch(fast.app, fast.host, fast.events, [], identities=fast.identities)
            batch.known, batch.diff = fast.held
            return batch
        return self.parse_slow(body)

    def parse_slow(self, body: bytes) -> Batch:
        """:meth:`parse` without its fast path: every body the usual way."""
        obj = parse_json(body, constants=True)
        try:
            _, app, raw_events = parse_envelope(obj)
        except InvalidEvent as exc:
            # Too many events is a size problem: 413 makes an SDK split the batch, not drop it.
            status = 413 if exc.rule == "too_many" else 400
            raise ApiError(status, str(exc), field=exc.field) from None
        batch = Batch(text(app.get("name")), text(app.get("host")), [], [])
        batch.known, batch.diff = held_actions(obj)
        for index, raw in enumerate(raw_events):
            try:
                event = parse_event(raw, measure)
                # LiteSOC's other spellings: one name stored; the collector's own refused.
                event["name"] = standard_name(event["name"])
            except InvalidEvent as exc:
                batch.rejected.append({"index": index, "error": str(exc)})
                batch.reasons.append(exc.rule)
            except Exception:  # a validation bug must not make the SDK retry this batch forever
                logger.exception("sqreen: unexpected error validating event %d", index)
                batch.rejected.append({"index": index, "error": "event: could not be validated"})
                batch.reasons.append("unexpected")
            else:
                (batch.identities if event["name"] == IDENTIFY else batch.events).append(event)
        return batch

    def enrich(self, batch: Batch) -> None:
        if not self.enrichers or not batch.events:
            return
        batch.enrichment = [{} for _ in batch.events]
        for enricher in self.enrichers:
            try:
                enricher(batch)
            except Exception:
                logger.exception("sqreen: enricher %r failed; events stored without it", enricher)

    def store(self, batch: Batch) -> InsertResult:
        (result,) = self.store_many([batch])
        if isinstance(result, Exception):
            raise result
        return result

    def store_many(
        self, batches: Sequence[Batch], tied: TiedHooks | None = None
    ) -> list[InsertResult | Exception]:
        """Store the events of ``batches`` (in one transaction where the storage can: see
        :meth:`~.storage.EventStore.store_prepared`), then their ``sq.identify`` traits:
        each batch's result, or what stopped it. ``tied`` (:meth:`_tied`): the hooks to run
        in that transaction, where the storage ties."""
        prepared: list[PreparedEvents | Exception] = []
        for batch in batches:
            try:
                prepared.append(self._prepare(batch))
            except Exception as exc:
                prepared.append(_kept(exc))
        ready = [p for p in prepared if isinstance(p, PreparedEvents)]
        if tied is not None:
            tied.batches = [
                b for b, p in zip(batches, prepared, strict=True) if isinstance(p, PreparedEvents)
            ]
        store = self.storage.store_prepared
        stored = iter(store(ready) if tied is None else store(ready, tied))
        results = [p if isinstance(p, Exception) else next(stored) for p in prepared]
        results = [_kept(r) if isinstance(r, Exception) else r for r in results]
        for n, (batch, result) in enumerate(zip(batches, results, strict=True)):
            if batch.identities and not isinstance(result, Exception):
                try:
                    self.storage.record_traits(batch.identities)
                except Exception as exc:
                    results[n] = _kept(exc)
        return results

    def _prepare(self, batch: Batch) -> PreparedEvents:
        prepare = self.storage.prepare_events
        try:
            return prepare(
                batch.events,
                app=batch.app,
                host=batch.host,
                enrichment=batch.enrichment or None,
                key_id=batch.key_id,
                places=batch.places,
            )
        except (TypeError, ValueError):
            if not batch.enrichment:
                raise
            # What enrichers added cannot be stored (not JSON, or not one dict an event): it
            # fails before the transaction begins; the events themselves must not be lost.
            logger.exception("sqreen: enrichment not storable; events stored without it")
            batch.enrichment = []
            return prepare(
                batch.events,
                app=batch.app,
                host=batch.host,
                key_id=batch.key_id,
                places=batch.places,
            )

    def after_store(self, batch: Batch, result: InsertResult) -> None:
        self.after_store_many([(batch, result)])

    def _tied(self) -> TiedHooks | None:
        """The hooks with ``tied_batches`` (the playbooks), to run in the transaction of
        :meth:`store_many`: None when there are none."""
        hooks = [cast(TiedHook, h) for h in self.hooks if hasattr(h, "tied_batches")]
        return TiedHooks(hooks) if hooks else None

    def after_store_many(
        self, stored: Sequence[tuple[Batch, InsertResult]], tied: TiedHooks | None = None
    ) -> None:
        """Tell each hook about the events newly stored by these batches: at once, for a
        hook with ``stored_batches`` (the playbooks: one evaluation, one transaction, for a
        group of bodies), else batch by batch, in order. Should a group's call fail, the
        hook is told batch by batch (its failure then one batch's, as were the bodies going
        one at a time): a ``stored_batches`` fails before its effects (the playbooks' are
        one transaction). The hooks ``tied`` ran in the events' transaction (when it
        committed) are not told again: what they left for after the commit is done first."""
        done: list[object] = []
        if tied is not None and tied.ran:
            done = list(tied.hooks)
            for then in tied.then:
                try:
                    then()
                except Exception:
                    logger.exception("sqreen: after-store hook failed after the commit")
        stored = [(batch, result) for batch, result in stored if result.stored]
        if not self.hooks or not stored:
            return
        for hook in self.hooks:
            if hook in done:
                continue
            stored_batches = getattr(hook, "stored_batches", None)
            if stored_batches is not None:
                try:
                    stored_batches(stored)
                except Exception:
                    if len(stored) == 1:
                        logger.exception("sqreen: after-store hook %r failed", hook)
                        continue
                    logger.warning(
                        "sqreen: after-store hook %r failed for %d batches; told each alone",
                        hook,
                        len(stored),
                        exc_info=True,
                    )
                    for one in stored:
                        try:
                            stored_batches([one])
                        except Exception:
                            logger.exception("sqreen: after-store hook %r failed", hook)
                continue
            for batch, result in stored:
                try:
                    hook(
                        new_events(
                            batch.events,
                            result,
                            app=batch.app,
                            host=batch.host,
                            enrichment=batch.enrichment or None,
                            key_id=batch.key_id,
                        )
                    )
                except Exception:
                    logger.exception("sqreen: after-store hook %r failed", hook)


#: An outcome not known yet (:meth:`IngestPipeline.ingest_many`'s list as it fills).
_PENDING: Any = ValueError("not stored yet")


def _stored(result: InsertResult | Exception) -> TypeGuard[InsertResult]:
    return not isinstance(result, Exception)
