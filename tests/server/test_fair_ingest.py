"""Fair turns of the ingest slot: bodies wait by sender (API key and client network), and a
turn takes them round-robin, so that one sender's flood does not hold another's body for
the whole flood. Hostile cases first; the queue drives the real pipeline on SQLite."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import anyio
import httpx2 as httpx
import pytest

from sqreen.server import _ingest_queue, ingest
from sqreen.server._ingest_queue import (
    LINE_BYTES,
    MAX_GROUP,
    MAX_GROUP_BYTES,
    QUANTUM,
    QUANTUM_BYTES,
    IngestQueue,
    sender,
)
from sqreen.server.app import create_app
from sqreen.server.auth import hash_token, new_token
from sqreen.server.connections import PROTOCOL
from sqreen.server.ingest import MAX_BODY_BYTES, gunzip
from sqreen.server.pipeline import Batch, IngestPipeline
from sqreen.server.storage import Storage
from tests.integrations._servers import UvicornThread

from .conftest import envelope, wait_for, wire_event
from .test_grouped_ingest import body
from .test_grouped_ingest_hostile import until


def labelled(label: str, size: int = 0) -> bytes:
    """A body of one event labelled ``label``, padded with spaces to ``size`` bytes."""
    raw = body(wire_event(properties={"b": label}))
    return raw[:-1] + b" " * max(0, size - len(raw)) + b"}"


def label_of(raw: bytes) -> str:
    return str(json.loads(raw)["events"][0]["properties"]["b"])


class Recorder(IngestPipeline):
    """The pipeline, noting the bodies of each turn; its first turn held until released,
    so that the bodies posted meanwhile wait as they would behind a long turn."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self.turns: list[list[str]] = []
        self.sizes: list[int] = []
        self.started, self.release = threading.Event(), threading.Event()

    def ingest_many(self, bodies: Sequence[tuple[bytes, int]]) -> list[Any]:
        self.turns.append([label_of(b) for b, _ in bodies])
        self.sizes.append(sum(len(b) for b, _ in bodies))
        if len(self.turns) == 1:
            self.started.set()
            self.release.wait(30)
        return super().ingest_many(bodies)


def turns_after_a_held_one(
    storage: Storage, posts: Sequence[tuple[Hashable, bytes]], cancel: Sequence[int] = ()
) -> tuple[Recorder, list[Any], IngestQueue]:
    """One body holds the slot while ``posts`` (sender, body) are given in order (and those
    at the indices ``cancel`` then cancelled); the turns that followed the held one, each
    post's outcome ("cancelled" or the reply), and the queue."""
    recorder = Recorder(storage)

    async def run() -> tuple[list[Any], IngestQueue]:
        queue = IngestQueue(recorder, anyio.CapacityLimiter(1))
        held = asyncio.create_task(queue.ingest(labelled("held"), 0, "holder"))
        await until(recorder.started.is_set)
        tasks = [asyncio.create_task(queue.ingest(raw, 0, by)) for by, raw in posts]
        await until(lambda: queue.pending == 1 + len(posts))
        for n in cancel:
            tasks[n].cancel()
        await asyncio.wait(tasks, timeout=0)  # the cancellations land
        recorder.release.set()
        await held
        out: list[Any] = []
        for task in tasks:
            try:
                out.append(await task)
            except asyncio.CancelledError:
                out.append("cancelled")
        return out, queue

    outcomes, queue = asyncio.run(run())
    assert recorder.turns[0] == ["held"]
    recorder.turns.pop(0)
    recorder.sizes.pop(0)
    return recorder, outcomes, queue


def test_a_body_posted_behind_a_flood_of_thirty_goes_after_a_quantum_of_it(
    sqlite_storage: Storage,
) -> None:
    flood = [("attacker", labelled(f"a{n}")) for n in range(30)]
    recorder, outcomes, queue = turns_after_a_held_one(
        sqlite_storage, [*flood, ("app", labelled("app"))]
    )
    assert QUANTUM == 4
    assert recorder.turns[0] == ["a0", "a1", "a2", "a3", "app", "a4", "a5", "a6"]
    # The rest of the flood, in its order, eight a turn.
    rest = [f"a{n}" for n in range(7, 30)]
    assert recorder.turns[1:] == [rest[i : i + MAX_GROUP] for i in range(0, len(rest), MAX_GROUP)]
    assert all(o[0]["accepted"] == 1 for o in outcomes)
    assert (queue.pending, queue.waiting, queue.senders) == (0, 0, 0)
    assert sqlite_storage.count_events() == 32


def test_a_body_posted_behind_a_flood_of_huge_bodies_goes_after_one_of_them(
    sqlite_storage: Storage,
) -> None:
    """Bodies cost their bytes: a flooder's body of more than QUANTUM_BYTES (1 000 events
    padded to megabytes, from a few KB of gzip) spends its quantum, where it used to be one
    of QUANTUM taken in a row, each a turn of its own, the app's body waiting for all."""
    flood = [("attacker", labelled(f"a{n}", QUANTUM_BYTES + 1)) for n in range(5)]
    recorder, outcomes, _ = turns_after_a_held_one(
        sqlite_storage, [*flood, ("app", labelled("app"))]
    )
    assert recorder.turns == [["a0"], ["app"], ["a1"], ["a2"], ["a3"], ["a4"]]
    assert all(o[0]["accepted"] == 1 for o in outcomes)


def test_senders_of_bodies_of_more_than_half_a_quantum_alternate_two_by_two(
    sqlite_storage: Storage,
) -> None:
    """The quantum ends with the body that reaches QUANTUM_BYTES: two bodies of 60 % of it
    (each a turn alone, as two do not fit one), then the other sender's two, where a
    quantum of bodies counted gave the first sender all four before the other's first."""
    big = int(QUANTUM_BYTES * 0.6)
    posts = [("a", labelled(f"a{n}", big)) for n in range(4)]
    posts += [("b", labelled(f"b{n}", big)) for n in range(4)]
    recorder, _, _ = turns_after_a_held_one(sqlite_storage, posts)
    assert recorder.turns == [[x] for x in ["a0", "a1", "b0", "b1", "a2", "a3", "b2", "b3"]]


class Burning(Recorder):
    """:class:`Recorder` whose second turn burns ``seconds`` of CPU: a turn dear to store."""

    def __init__(self, storage: Storage, seconds: float) -> None:
        super().__init__(storage)
        self.seconds = seconds

    def ingest_many(self, bodies: Sequence[tuple[bytes, int]]) -> list[Any]:
        if len(self.turns) == 1:  # the turn after the held one
            end = time.thread_time() + self.seconds
            while time.thread_time() < end:
                pass
        return super().ingest_many(bodies)


def test_a_sender_whose_turn_took_long_sits_out_while_another_waits(
    sqlite_storage: Storage,
) -> None:
    """Each turn's CPU time is charged to its senders by their bodies' events: a's four
    bodies of 100 events took most of a 0.2 s turn, and a sits its next turns out (a
    QUANTUM_SECONDS less owed each time) while b's bodies wait, where it would have taken
    four again. Alone, it owes nothing: it goes on at once."""
    recorder = Burning(sqlite_storage, 0.2)
    a = [
        ("a", body(*[wire_event(properties={"b": f"a{n}"}) for _ in range(100)])) for n in range(6)
    ]
    b = [("b", labelled(f"b{n}")) for n in range(10)]

    async def run() -> None:
        queue = IngestQueue(recorder, anyio.CapacityLimiter(1))
        held = asyncio.create_task(queue.ingest(labelled("held"), 0, "holder"))
        await until(recorder.started.is_set)
        tasks = [asyncio.create_task(queue.ingest(raw, 0, by)) for by, raw in [*a, *b]]
        await until(lambda: queue.pending == 1 + len(tasks))
        recorder.release.set()
        await held
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert recorder.turns[1] == ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3"]
    assert recorder.turns[2] == ["b4", "b5", "b6", "b7", "b8", "b9", "a4", "a5"]


def test_three_senders_interleave_and_a_turn_goes_on_where_the_last_stopped(
    sqlite_storage: Storage,
) -> None:
    posts = [("a", labelled(f"a{n}")) for n in range(7)]
    posts += [("b", labelled(f"b{n}")) for n in range(3)]
    posts += [("c", labelled(f"c{n}")) for n in range(4)]
    posts.insert(5, ("b", labelled("b-early")))  # a sender's bodies in the order it sent them
    recorder, _, queue = turns_after_a_held_one(sqlite_storage, posts)
    assert recorder.turns == [
        ["a0", "a1", "a2", "a3", "b-early", "b0", "b1", "b2"],
        ["c0", "c1", "c2", "c3", "a4", "a5", "a6"],
    ]
    assert queue.senders == 0


def fifo_turns(sizes: Sequence[int]) -> list[list[int]]:
    """The turns of one line, first in first out, as the queue took them before it was fair:
    up to MAX_GROUP bodies, stopping at the one past MAX_GROUP_BYTES (but for the first)."""
    turns, start = [], 0
    while start < len(sizes):
        taken = size = 0
        for s in sizes[start : start + MAX_GROUP]:
            size += s
            if taken and size > MAX_GROUP_BYTES:
                break
            taken += 1
        turns.append(list(range(start, start + taken)))
        start += taken
    return turns


def test_one_sender_alone_is_grouped_exactly_as_before(sqlite_storage: Storage) -> None:
    mb = 1024 * 1024
    sizes = [0] * 11 + [3 * mb, 2 * mb, 0, 5 * mb, 0, 0, int(1.5 * mb), int(1.5 * mb), mb] + [0] * 9
    posts = [("one", labelled(str(n), size)) for n, size in enumerate(sizes)]
    recorder, outcomes, _ = turns_after_a_held_one(sqlite_storage, posts)
    expected = fifo_turns([len(raw) for _, raw in posts])
    assert len(expected) > len(sizes) // MAX_GROUP + 1  # the bytes bound cut some turns
    assert recorder.turns == [[str(n) for n in turn] for turn in expected]
    assert [o[0]["accepted"] for o in outcomes] == [1] * len(sizes)


def test_the_bytes_bound_holds_and_the_sender_it_stopped_goes_first_next(
    sqlite_storage: Storage,
) -> None:
    big = int(MAX_GROUP_BYTES * 0.6)
    posts = [("a", labelled("a-huge", MAX_GROUP_BYTES + 1))]
    posts += [("a", labelled(f"a{n}", big)) for n in range(3)]
    posts += [("b", labelled(f"b{n}")) for n in range(3)]
    recorder, _, _ = turns_after_a_held_one(sqlite_storage, posts)
    # The huge body alone, and it spends a's quantum (QUANTUM_BYTES): b, stopped by the
    # bytes bound, goes first in the next turn, then a's 60 % bodies one a turn, a stopped
    # there too going first in the turn after.
    assert recorder.turns == [["a-huge"], ["b0", "b1", "b2", "a0"], ["a1"], ["a2"]]
    assert all(size <= MAX_GROUP_BYTES for size in recorder.sizes[1:])


def test_bodies_whose_requests_went_away_take_no_place_and_are_not_stored(
    sqlite_storage: Storage,
) -> None:
    posts = [("a", labelled(f"a{n}")) for n in range(5)]
    posts += [("b", labelled(f"b{n}")) for n in range(2)]
    posts += [("c", labelled(f"c{n}")) for n in range(2)]
    # a1, b0 and both of c's go away before their turn.
    recorder, outcomes, queue = turns_after_a_held_one(sqlite_storage, posts, cancel=(1, 5, 7, 8))
    assert recorder.turns == [["a0", "a2", "a3", "a4", "b1"]]
    assert [o == "cancelled" for o in outcomes] == [n in (1, 5, 7, 8) for n in range(9)]
    stored = {e.properties["b"] for e in sqlite_storage.query_events()}
    assert stored == {"held", "a0", "b1", "a2", "a3", "a4"}
    assert (queue.pending, queue.waiting, queue.senders, queue.grouped) == (0, 0, 0, 6)


def test_a_body_stored_after_its_client_hung_up_is_counted_as_accepted(
    sqlite_storage: Storage,
) -> None:
    """A client that hangs up while its body is being stored gets no reply, but its events
    are stored: ``sqreen_events_accepted_total`` counts them (it missed them, so a client
    that timed out and sent again left events counted nowhere)."""
    from prometheus_client import REGISTRY

    def accepted() -> float:
        return REGISTRY.get_sample_value("sqreen_events_accepted_total") or 0.0

    before = accepted()
    recorder = Recorder(sqlite_storage)

    async def run() -> None:
        queue = IngestQueue(recorder, anyio.CapacityLimiter(1))
        held = asyncio.create_task(queue.ingest(labelled("held"), 0, "holder"))
        await until(recorder.started.is_set)
        held.cancel()  # the client hangs up while the body is being stored
        await asyncio.wait([held], timeout=0)
        recorder.release.set()
        await until(lambda: sqlite_storage.count_events() == 1 and queue.pending == 0)
        await until(lambda: accepted() == before + 1, timeout=5)

    asyncio.run(run())
    assert [e.properties["b"] for e in sqlite_storage.query_events()] == ["held"]


def test_an_app_of_many_processes_keeps_a_share_against_a_flood_from_many_addresses(
    sqlite_storage: Storage,
) -> None:
    """16 processes behind one address are one sender with 16 bodies waiting; a flood from
    8 addresses, two connections each, is 8 senders of two. One body a sender at its turn
    gave the app one body in nine (half its batches then waited past the SDK's timeout);
    it takes up to QUANTUM, as the flooders take theirs."""
    posts = [(f"flood-{n}", labelled(f"f{n}")) for n in range(8)]
    posts += [("app", labelled(f"app{n}")) for n in range(16)]
    posts += [(f"flood-{n}", labelled(f"g{n}")) for n in range(8)]
    recorder, _, _ = turns_after_a_held_one(sqlite_storage, posts)
    order = [label for turn in recorder.turns for label in turn]
    flood = [label for n in range(8) for label in (f"f{n}", f"g{n}")]
    assert order[: 16 + QUANTUM] == [*flood, *(f"app{n}" for n in range(QUANTUM))]
    assert order[16 + QUANTUM :] == [f"app{n}" for n in range(QUANTUM, 16)]


@pytest.mark.slow
def test_ten_thousand_senders_are_served_in_turn_and_forgotten(sqlite_storage: Storage) -> None:
    """A flood from 10 000 addresses: each line holds one body, the turns take them in the
    order they came (no sender served twice before all were), eight a turn, and a sender is
    forgotten once its line is empty."""
    n = 10_000
    posts = [(sender(1, f"10.{i // 256}.{i % 256}.1"), labelled(str(i))) for i in range(n)]
    posts.append((sender(1, "192.0.2.1"), labelled("app")))
    posts += [(sender(1, "10.0.0.1"), labelled("again"))]  # the first sender's second body
    recorder, outcomes, queue = turns_after_a_held_one(sqlite_storage, posts)
    order = [label for turn in recorder.turns for label in turn]
    assert order == ["0", "again", *map(str, range(1, n)), "app"]  # the first's two at once
    assert [len(t) for t in recorder.turns[:-1]] == [MAX_GROUP] * (len(recorder.turns) - 1)
    assert (queue.senders, queue.waiting, queue.pending) == (0, 0, 0)
    assert sum(o[0]["accepted"] for o in outcomes) == n + 2


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ((1, "192.0.2.1"), (1, "192.0.2.1"), True),
        ((1, "192.0.2.1"), (2, "192.0.2.1"), False),  # another key, behind the same address
        ((1, "192.0.2.1"), (1, "192.0.2.2"), False),  # the same key (leaked), elsewhere
        ((1, "2001:db8:1:2::5"), (1, "2001:db8:1:2:ffff::1"), True),  # one /64
        ((1, "2001:db8:1:2::5"), (1, "2001:db8:1:3::5"), False),
        ((1, "::ffff:192.0.2.1"), (1, "192.0.2.1"), True),  # IPv4-mapped
        ((1, "2002:c000:201::1"), (1, "192.0.2.1"), True),  # 6to4: its IPv4 client
        ((1, None), (1, None), True),  # no address (a Unix socket)
    ],
)
def test_a_sender_is_the_key_and_the_client_network(
    a: tuple[int, str | None], b: tuple[int, str | None], same: bool
) -> None:
    assert (sender(*a) == sender(*b)) is same


# -- over HTTP, on a real uvicorn ---------------------------------------------------------

#: Flood bodies, each from a connection of its own, all from 127.0.0.2 with one key.
FLOOD = 8


def flood_body(n: int) -> bytes:
    """A body that inflates to about 60 % of MAX_GROUP_BYTES (a turn takes one, and a small
    body beside it) from a few kilobytes of gzip."""
    pad = {f"pad{i}": "x" * 4000 for i in range(3)}  # strings of 4 096 characters at most
    events = [wire_event(properties={"flood": n, **pad}) for _ in range(210)]
    raw = json.dumps(envelope(events)).encode()
    assert MAX_GROUP_BYTES // 2 < len(raw) < MAX_GROUP_BYTES
    return gzip.compress(raw)


def gated(in_turn: Callable[[], bool] = lambda: False) -> Any:
    """An enricher holding the first turn until ``release``, and each flood body after the
    first three (the test allows the small body to come after three) until ``answered``: the
    flood is still waiting, by construction, when the small body's reply reaches its client,
    if it comes before the flood's end. A flood body in the small body's own turn
    (``in_turn``: a turn may take a flood body and the small one beside it) goes on. (Held
    from the third, a flood body the small one came after, as deficit round-robin lets it
    when the flood's sender has time left of its quantum, held the small body's reply with
    it until the gate's 30 s ran out: half a minute of the suite, the test still passing.)"""
    release, answered, flood = threading.Event(), threading.Event(), [0]

    def enrich(batch: Batch) -> None:
        if not release.is_set():
            release.wait(30)
        if batch.events and "flood" in batch.events[0]["properties"]:
            flood[0] += 1
            # (30 s: on two cores shared with other suites, the small body's reply took more
            # than 10 s twice, and the flood went on without the gate.)
            deadline = time.monotonic() + 30
            while flood[0] > 3 and not answered.wait(0.01) and not in_turn():
                if time.monotonic() > deadline:
                    answered.set()  # not answered before the flood's end: once is enough

    enrich.release, enrich.answered = release, answered  # type: ignore[attr-defined]
    return enrich


@pytest.mark.slow
@pytest.mark.parametrize(
    ("address", "own_key", "fair"),
    [
        ("127.0.0.1", False, True),  # the flood's key (leaked), from the app's own address
        ("127.0.0.2", True, True),  # another app's key, from the flood's address
        ("127.0.0.2", False, False),  # the flood's own sender: in line behind it
    ],
)
def test_a_small_body_posted_during_a_gzip_flood_is_answered_before_the_flood(
    live_app: tuple[Any, str], sqlite_storage: Storage, address: str, own_key: bool, fair: bool
) -> None:
    switch, url = live_app
    token, other = new_token(), new_token()
    sqlite_storage.create_key("flood", hash_token(token))
    sqlite_storage.create_key("app", hash_token(other))
    queue = lambda: getattr(app.state, "ingest_queue", None)  # noqa: E731

    def small_in_turn() -> bool:
        q = queue()
        return q is not None and any(b'"small"' in job[0] for job in q._running)

    enrich = gated(small_in_turn)
    if not fair:
        enrich.answered.set()
    app = switch.app = create_app(sqlite_storage, enrichers=[enrich])
    gz = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    replies: list[int] = []
    seen: dict[str, int] = {}

    def post(source: str, key: str, content: bytes, then: Callable[[int], None]) -> None:
        transport = httpx.HTTPTransport(local_address=source)  # 127.0.0.0/8 is all local
        headers = {**gz, "Authorization": f"Bearer {key}"}
        with httpx.Client(transport=transport, headers=headers, timeout=60) as client:
            response = client.post(url + "/v1/events", content=content)
        if response.status_code == 200:
            then(response.json()["accepted"])

    def small_answered(accepted: int) -> None:
        q = queue()
        seen.update(accepted=accepted, flood_replies=len(replies), waiting=q.waiting if q else -1)
        enrich.answered.set()

    threads = [
        threading.Thread(target=post, args=("127.0.0.2", token, flood_body(n), replies.append))
        for n in range(FLOOD)
    ]
    for t in threads:
        t.start()
    wait_for(lambda: (q := queue()) is not None and q.pending == FLOOD)  # the first turn held
    small = gzip.compress(json.dumps(envelope([wire_event(properties={"small": 1})])).encode())
    key = other if own_key else token
    threads.append(threading.Thread(target=post, args=(address, key, small, small_answered)))
    threads[-1].start()
    # In another sender's line; or, the flood's own sender, waiting to be inflated while
    # the flood's line holds LINE_BYTES (behind it all the same).
    wait_for(lambda: queue().pending == FLOOD + 1 or (not fair and queue().inflating == 1))  # type: ignore[union-attr]
    enrich.release.set()
    for t in threads:
        t.join(60)
    assert replies == [210] * FLOOD and seen["accepted"] == 1  # every post answered 200
    events = sqlite_storage.query_events(limit=FLOOD * 210 + 1)
    (small_seq,) = [e.seq for e in events if "small" in e.properties]
    before = {e.properties["flood"] for e in events if e.seq < small_seq}
    if fair:
        # Stored within two turns of the one running when it came (each flood body is a
        # turn of its own: over TURN_SECONDS as bytes cost), and answered while the rest of
        # the flood still waited. (A flood reply of its turn may reach its client after it.)
        assert 1 <= len(before) <= 3
        assert seen["flood_replies"] <= 3 and seen["waiting"] >= FLOOD - 3
    else:
        assert len(before) == FLOOD


@pytest.mark.slow
def test_bodies_of_clients_that_hung_up_while_waiting_are_not_stored(
    live_app: tuple[Any, str], sqlite_storage: Storage
) -> None:
    """uvicorn does not cancel a request's task when its client goes: a body waiting for its
    turn stayed in its line, inflated, and was stored, so a key holder could queue any number
    of them while holding no connection (``--max-connections`` bounded nothing). A body whose
    client hangs up now leaves its line at once."""
    switch, url = live_app
    token = new_token()
    sqlite_storage.create_key("k", hash_token(token))
    enrich = gated()
    app = switch.app = create_app(sqlite_storage, enrichers=[enrich])
    queue = lambda: getattr(app.state, "ingest_queue", None)  # noqa: E731
    held = threading.Thread(
        target=lambda: httpx.post(
            url + "/v1/events",
            content=json.dumps(envelope([wire_event(properties={"held": 1})])).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=60,
        )
    )
    held.start()
    wait_for(lambda: (q := queue()) is not None and q.pending == 1)  # the first turn held
    host, port = url.removeprefix("http://").split(":")
    gone = 20
    for n in range(gone):
        raw = json.dumps(envelope([wire_event(properties={"gone": n})])).encode()
        with socket.create_connection((host, int(port)), source_address=("127.0.0.2", 0)) as s:
            s.sendall(
                f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
                + raw
            )
            wait_for(lambda: queue().pending == 2)  # type: ignore[union-attr]
        # Closed: the body leaves its line.
        wait_for(lambda: queue().pending == 1)  # type: ignore[union-attr]
    enrich.release.set()
    enrich.answered.set()
    held.join(60)
    wait_for(lambda: queue().pending == 0)  # type: ignore[union-attr]
    stored = [e.properties for e in sqlite_storage.query_events()]
    assert stored == [{"held": 1}]


def bomb() -> bytes:
    """A few KB of gzip that inflate to more than the collector's bound: refused, 413."""
    return gzip.compress(b'{"events": "' + b"x" * MAX_BODY_BYTES + b'"}')


def gzip_post(token: str, raw: bytes) -> bytes:
    """An HTTP request posting the gzip body ``raw`` as a batch, with ingest key ``token``."""
    return (
        f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    ).encode() + raw


class CountedInflation:
    """gunzip as the queue calls it, slowed (a gzip bomb's 25-40 ms) and counted: how many
    bodies were inflated, and how many at most at once."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        seconds: float = 0.1,
        gate: threading.Event | None = None,
    ) -> None:
        """``gate``: each inflation waits for it to be set too (then ``seconds``)."""
        # Where the queue calls it, and where bodies were inflated before (ingest.read_body).
        self.calls = self.running = self.most = 0
        self.lock = threading.Lock()

        def slow(raw: bytes, max_bytes: int) -> bytes:
            with self.lock:
                self.calls += 1
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                if gate is not None:
                    gate.wait(60)
                threading.Event().wait(seconds)
                return gunzip(raw, max_bytes)
            finally:
                with self.lock:
                    self.running -= 1

        monkeypatch.setattr(_ingest_queue, "gunzip", slow)
        monkeypatch.setattr(ingest, "gunzip", slow)


def test_a_sender_whose_line_holds_its_share_waits_to_inflate_and_another_does_not(
    sqlite_storage: Storage,
) -> None:
    """A body inflated is held in its line, a hundredfold its gzip: past LINE_BYTES, the
    sender's next gzip body waits, compressed, until its line shrinks; another sender's is
    inflated meanwhile."""
    recorder = Recorder(sqlite_storage)
    first = labelled("a0", LINE_BYTES)

    async def run() -> None:
        queue = IngestQueue(recorder, anyio.CapacityLimiter(1))
        held = asyncio.create_task(queue.ingest(labelled("held"), 0, "holder"))
        await until(recorder.started.is_set)
        queued = asyncio.create_task(queue.ingest(first, 0, "a"))
        await until(lambda: queue.line_bytes("a") == len(first))
        waiting = asyncio.create_task(queue.inflate("a", gzip.compress(labelled("a1")), 10**8))
        other = await queue.inflate("b", gzip.compress(labelled("b0")), 10**8)
        assert label_of(other) == "b0"  # inflated while a's waits (entered before it)
        await until(lambda: queue.inflating == 1)
        assert not waiting.done()  # a's, waiting for its line
        recorder.release.set()  # the held turn ends; the next takes a0: a's line is empty
        assert label_of(await waiting) == "a1"
        await held
        await queued
        assert queue.line_bytes("a") == 0 and queue.inflating == 0

    asyncio.run(run())


@pytest.mark.slow
def test_gzip_bombs_of_one_sender_are_inflated_one_at_a_time_beside_another_sender(
    live_app: tuple[Any, str], sqlite_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bodies that inflate past the bound, posted on 12 connections under a leaked key: each
    is refused (413), inflated one at a time on threads of their own, so that another
    sender's batch (here, another key's) is inflated and answered while they wait."""
    switch, url = live_app
    token, other = new_token(), new_token()
    sqlite_storage.create_key("flood", hash_token(token))
    sqlite_storage.create_key("app", hash_token(other))
    switch.app = create_app(sqlite_storage)
    counted = CountedInflation(monkeypatch)
    gz = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    raw = bomb()
    statuses: list[int] = []

    def flood() -> None:
        with httpx.Client(headers={**gz, "Authorization": f"Bearer {token}"}, timeout=60) as c:
            statuses.append(c.post(url + "/v1/events", content=raw).status_code)

    threads = [threading.Thread(target=flood) for _ in range(12)]
    for t in threads:
        t.start()
    wait_for(lambda: counted.calls >= 1)
    small = gzip.compress(json.dumps(envelope([wire_event(properties={"app": 1})])).encode())
    reply = httpx.post(
        url + "/v1/events", content=small, headers={**gz, "Authorization": f"Bearer {other}"}
    )
    assert reply.status_code == 200 and reply.json()["accepted"] == 1
    assert counted.calls < 12  # answered before the flood was all inflated
    for t in threads:
        t.join(60)
    assert statuses == [413] * 12
    assert counted.most == 2  # one of the flood's at a time, and the app's beside it


@pytest.mark.slow
def test_gzip_bombs_whose_clients_hung_up_are_not_inflated(
    sqlite_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Posted on connections closed at once, holding none: ``sqreen serve``'s server reads
    the body all the same, and each was inflated in turn to be refused, the backlog
    unbounded (3 000 of them held another app's batch 38 s). A body whose client is gone
    before its inflation is dropped."""
    token = new_token()
    sqlite_storage.create_key("k", hash_token(token))
    app = create_app(sqlite_storage)
    gate = threading.Event()  # the first inflation runs until the clients are seen gone
    counted = CountedInflation(monkeypatch, seconds=0.05, gate=gate)
    server = UvicornThread(app, lifespan="off", http=PROTOCOL)  # as sqreen serve runs it
    try:
        raw = bomb()
        clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        for s in clients:
            s.sendall(gzip_post(token, raw))
        # Every body read: one inflating, the others waiting for it.
        wait_for(lambda: getattr(app.state, "ingest_queue", None) is not None)
        wait_for(lambda: app.state.ingest_queue.inflating == 20)
        for s in clients:
            s.close()
        # Each body dropped as its client is seen gone (the one inflating too: its thread
        # runs on, nobody waits for it), while the first inflation is still held.
        wait_for(lambda: app.state.ingest_queue.inflating == 0)
        gate.set()
        wait_for(lambda: counted.running == 0)
        assert counted.calls == 1  # the one inflating when they went, none after it
    finally:
        server.stop()


def test_bombs_posted_and_hung_up_one_after_another_are_inflated_one_at_a_time(
    sqlite_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each client hangs up once its body is being inflated, and the next posts: a gunzip
    cannot be stopped, so the thread of a body whose client is gone runs on. It keeps its
    place: the sender's next body waits for it, and no more than INFLATE_THREADS run at
    once however many senders do it (each hang-up started one more thread beside the
    last ones, without bound)."""
    tokens = [new_token() for _ in range(4)]
    for n, token in enumerate(tokens):
        sqlite_storage.create_key(f"k{n}", hash_token(token))
    app = create_app(sqlite_storage)
    counted = CountedInflation(monkeypatch, seconds=0.3)
    server = UvicornThread(app, lifespan="off", http=PROTOCOL)
    raw = bomb()

    def post_and_hang_up(token: str, times: int) -> None:
        for _ in range(times):
            s = socket.create_connection(("127.0.0.1", server.port))
            before = counted.calls
            s.sendall(gzip_post(token, raw))
            # Hung up once any body is being inflated (its own, or another's while its own
            # waits): either way a client gone.
            wait_for(lambda before=before: counted.calls > before, timeout=30)
            s.close()

    try:
        post_and_hang_up(tokens[0], 4)
        wait_for(lambda: counted.running == 0, timeout=30)
        assert counted.most == 1  # one sender: one at a time
        senders = [threading.Thread(target=post_and_hang_up, args=(token, 4)) for token in tokens]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(60)
        wait_for(lambda: counted.running == 0, timeout=30)
        assert counted.most == _ingest_queue.INFLATE_THREADS
    finally:
        server.stop()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(None, id="inflating past the bound"),
        pytest.param(gzip.compress(b"x" * 4_000_000)[:-8], id="truncated"),
        pytest.param(gzip.compress(b"x" * 4_000_000) + b"more", id="data after the end"),
    ],
)
def test_a_refused_gzip_body_is_not_held_by_its_error(raw: bytes | None) -> None:
    """The error refusing a body keeps none of what was inflated: an inflation whose client
    hung up ends in a task nobody awaits, whose error is in a cycle with it (freed by a
    collection only), and 300 bombs posted and hung up held 550-1 000 MiB at once
    (``bench/bench_hangup_flood.py``)."""
    with pytest.raises(ingest.ApiError) as refused:
        gunzip(bomb() if raw is None else raw, MAX_BODY_BYTES)
    frames = [frame for frame, _ in traceback.walk_tb(refused.value.__traceback__)]
    held = [
        name
        for frame in frames
        for name, value in frame.f_locals.items()
        if isinstance(value, bytes | bytearray) and len(value) > 1_000_000
    ]
    assert frames and held == []


def test_bombs_of_many_senders_hung_up_while_waiting_for_a_thread_are_never_inflated(
    sqlite_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 senders post a bomb each and hang up while two are being inflated (held) and the
    others wait for the two threads: those waiting are dropped, never inflated. Kept until
    their turn, the bombs of 3 000 senders hung up were each inflated in turn, and another
    app's batch waited 34 s behind them."""
    tokens = [new_token() for _ in range(30)]
    for n, token in enumerate(tokens):
        sqlite_storage.create_key(f"k{n}", hash_token(token))
    app = create_app(sqlite_storage)
    gate = threading.Event()
    counted = CountedInflation(monkeypatch, seconds=0.01, gate=gate)
    server = UvicornThread(app, lifespan="off", http=PROTOCOL)
    try:
        raw = bomb()
        clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in tokens]
        for s, token in zip(clients, tokens, strict=True):
            s.sendall(gzip_post(token, raw))
        wait_for(lambda: getattr(app.state, "ingest_queue", None) is not None)
        wait_for(lambda: app.state.ingest_queue.inflating == 30 and counted.running == 2)
        for s in clients:
            s.close()
        wait_for(lambda: app.state.ingest_queue.inflating == 0)
        gate.set()
        # Once a job submitted now has run, every body still queued before it has started
        # (the pool takes them in order): a body wrongly kept is counted by then.
        app.state.ingest_queue._inflaters.submit(lambda: None).result(30)
        wait_for(lambda: counted.running == 0)
        assert counted.calls == _ingest_queue.INFLATE_THREADS
    finally:
        server.stop()
