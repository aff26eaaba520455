"""One batch to a sink, whatever it holds: split when the endpoint refuses it, with the
records it refuses alone set aside, so that no record stops the stream.

What is done with a batch by the endpoint's answer (:mod:`.sinks`):

- a 2xx answer (TCP: every byte acknowledged): the batch is delivered;
- HTTP 400, 413 or 422 (:class:`~.sinks.Refused`): the endpoint refuses what the batch
  holds, which sending it again will not change. A batch of several records is halved,
  and each half sent (the first first), down to single records; a record refused alone is
  **set aside** (counted, logged with its seq, and passed by the cursor: it stays in the
  database, for ``sqreen export``) once the endpoint took another record in the same
  delivery, or, for a batch of that one record, took the batch sent before it. Without
  either, the endpoint may be refusing everything (a wrong path or format, a body limit
  set to nothing): nothing is set aside, and the record is sent again later with those
  after it (an endpoint that starts refusing everything has one record set aside a lane,
  at most). The split stops there once :data:`MAX_UNTOLD` records were refused alone with
  none taken: a batch of 500 to an endpoint refusing everything was 999 posts a try;
  it is about 25;
- a record that cannot be encoded (:class:`~.records.Unencodable`: nothing was sent) is set
  aside at once: no endpoint can change that;
- anything else (a network error, a timeout, any other status: 401, 403, 404, 408, 429,
  5xx...) ends the delivery: what was delivered before it stays delivered, and the rest
  is sent again after a backoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import Counter

from .records import Unencodable
from .sinks import Record, Refused, Sink, SinkError

__all__ = ["MAX_UNTOLD", "SET_ASIDE", "Delivery", "SetAside", "deliver"]

#: Records refused alone, none taken in the delivery, after which it stops (the endpoint
#: may refuse everything: see the module).
MAX_UNTOLD: Final = 16

SET_ASIDE: Final = Counter(
    "sqreen_export_set_aside",
    "Records --export passed without their destination taking them, by kind and reason "
    "(refused: HTTP 400 or 422 alone; too_large: HTTP 413 alone; unencodable).",
    ["kind", "reason"],
)


@dataclass(frozen=True, slots=True)
class SetAside:
    index: int  # in the batch
    reason: str  # refused, too_large, unencodable
    detail: str  # for the log: the status, or the encoding's error


@dataclass(slots=True)
class Delivery:
    """What became of a batch: its first ``settled`` records were delivered or set aside
    (the cursor may pass them); ``error``, why the rest was not (to be sent again)."""

    settled: int = 0
    delivered: int = 0
    set_aside: list[SetAside] = field(default_factory=list)
    error: SinkError | None = None
    #: Whether the endpoint took the last part it answered (the next delivery's evidence).
    took_last: bool = False


def deliver(sink: Sink, records: Sequence[Record], took_last: bool = False) -> Delivery:
    """Send ``records`` through ``sink``, split as the endpoint's answers require (see the
    module). ``took_last``: whether the endpoint took the last batch sent before these."""
    out = Delivery(took_last=took_last)
    # Whether the endpoint takes records, so that one it refuses alone is at fault: the
    # last batch's answer is evidence for a lone record only (a batch refused whole after
    # it, record by record, is an endpoint that now refuses everything).
    trusted = took_last and len(records) == 1
    pending: list[SetAside] = []  # refused alone, after the last part delivered
    parts = [(0, len(records))]  # a stack: the first part of the batch on top
    while parts:
        start, end = parts.pop()
        if start >= end:
            continue
        try:
            sink.send(records[start:end])
        except Unencodable as exc:  # nothing sent: the others go on either side of it
            index = start + exc.index
            pending.append(SetAside(index, "unencodable", str(exc)))
            parts += [(index + 1, end), (start, index)]
            continue
        except Refused as exc:
            out.took_last = False
            if end - start > 1:
                middle = (start + end) // 2
                parts += [(middle, end), (start, middle)]
            else:
                reason = "too_large" if exc.status == 413 else "refused"
                pending.append(SetAside(start, reason, str(exc)))
                if not trusted and len(pending) >= MAX_UNTOLD:
                    break  # nothing taken to tell bad records from an endpoint refusing all
            continue
        except SinkError as exc:
            out.error = exc
            break
        except Exception as exc:  # a sink's bug: a failure like any other, sent again later
            out.error = SinkError(f"{type(exc).__name__}: {str(exc)[:200]}")
            break
        trusted = out.took_last = True
        out.set_aside += pending
        pending = []
        out.settled = end
        out.delivered += end - start
    # What follows the last part delivered: set aside if the endpoint showed it takes
    # records (or the record could not be encoded), as far as no other record waits.
    waiting = None
    for record in pending:
        if record.index != out.settled or not (trusted or record.reason == "unencodable"):
            waiting = record
            break
        out.set_aside.append(record)
        out.settled += 1
    if out.error is None and waiting is not None:
        out.error = SinkError(
            f"{waiting.detail} for a record alone, and no other record taken to tell a bad "
            "record from an endpoint refusing all: it is sent again later, with the next ones"
        )
    return out
