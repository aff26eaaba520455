"""Webhooks under an alert flood: a playbook's alerts wait in their own queue, posted in
turn with the others', at most ``burst`` of them alone and the next ones merged into one
summary post, so that a flood (a scan of a thousand addresses, or alerts forged with a
leaked ingest key) never holds back nor drops the alert that follows, whether of another
playbook or of another group key of its own; and the flood is counted, never lost."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import REGISTRY

from sqreen.server.playbooks import Notifier, verify_signature
from sqreen.server.playbooks._lanes import MOST_KEY_BYTES
from tests.integrations._servers import wait_until
from tests.receiver import RawServer, http_reply

from .webhook_receiver import WebhookReceiver

BURST = 10  # Notifier's default


class Recorder(WebhookReceiver):
    """A webhook that records every post (its JSON and whether its signature holds), holds
    the first until :attr:`gate` is set, and calls :attr:`on_post` at each."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.holding = threading.Event()
        self.posts: list[dict[str, Any]] = []
        self.signed: list[bool] = []
        self.on_post: Callable[[], None] | None = None
        self._lock = threading.Lock()
        super().__init__()

    def handle(self, body: bytes, signature: str | None) -> None:
        self.holding.set()
        self.gate.wait(30)
        with self._lock:
            self.posts.append(json.loads(body))
            self.signed.append(signature is not None and verify_signature("s", body, signature))
        if self.on_post is not None:
            self.on_post()

    @property
    def alone(self) -> list[dict[str, Any]]:
        return [p["alert"] for p in list(self.posts) if "alert" in p]

    @property
    def summaries(self) -> list[dict[str, Any]]:
        return [p["summary"] for p in list(self.posts) if "summary" in p]

    def index_of(self, key: str) -> int | None:
        """The index of the first post naming ``key``, alone or in a summary."""
        for n, post in enumerate(list(self.posts)):
            if post.get("alert", {}).get("group_key") == key:
                return n
            if key in post.get("summary", {}).get("group_keys", {}):
                return n
        return None

    def close(self) -> None:
        self.gate.set()
        super().close()


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    receiver = Recorder()
    yield receiver
    receiver.close()


def alert(playbook: str, n: int, key: str | None = None) -> dict[str, Any]:
    return {
        "alert": {
            "id": n,
            "playbook": playbook,
            "group_by": "ip",
            "group_key": key or f"12.0.{n // 256}.{n % 256}",
            "created_at": f"2025-01-01T00:00:{n % 60:02d}Z",
        }
    }


def flood(receiver: Recorder, notifier: Notifier, scans: int) -> None:
    """One scan alert in flight (held by the receiver), ``scans`` more waiting, then an
    account takeover; all posted once the receiver lets go."""
    try:
        notifier.submit((receiver.url,), alert("brute-force-ip", 0))
        assert receiver.holding.wait(10)  # the first is being posted: the rest wait
        for n in range(1, scans + 1):
            notifier.submit((receiver.url,), alert("brute-force-ip", n))
        notifier.submit((receiver.url,), alert("account-takeover", scans + 1, "user-x"))
        receiver.gate.set()
        assert notifier.join(30)
    finally:
        notifier.close()


def ids_posted(receiver: Recorder) -> list[int]:
    """Every alert's id, whether posted alone or within a summary (from its first to its
    last id: the tests' summaries hold consecutive ones)."""
    ids = [a["id"] for a in receiver.alone]
    for summary in receiver.summaries:
        ids += range(summary["first_id"], summary["last_id"] + 1)
    return sorted(ids)


def test_a_flood_of_one_playbook_does_not_hold_back_another(receiver: Recorder) -> None:
    notifier = Notifier("s", backoff=0.01)
    flood(receiver, notifier, 39)
    playbooks = [a["playbook"] for a in receiver.alone]
    assert playbooks.index("account-takeover") <= 2  # its turn, not the 41st
    # The first in flight, then BURST alone; the other 29 as one summary, after them.
    assert len(receiver.posts) == 1 + BURST + 1 + 1
    (summary,) = receiver.summaries
    assert (summary["playbook"], summary["alerts"], summary["unlisted"]) == (
        "brute-force-ip",
        29,
        0,
    )
    assert list(summary["group_keys"]) == [f"12.0.0.{n}" for n in range(11, 40)]
    assert ids_posted(receiver) == list(range(41))  # every alert said, once
    assert notifier.merged == 29
    assert all(receiver.signed)


def test_past_max_pending_a_playbook_waiting_is_summarised_and_another_still_alone(
    receiver: Recorder,
) -> None:
    notifier = Notifier("s", backoff=0.01, max_pending=5)
    flood(receiver, notifier, 11)
    # The first in flight, five alone (as many as may wait in all), then the other six
    # scans in one summary; the takeover, the first of its playbook, alone in its turn.
    assert [a["id"] for a in receiver.alone] == [0, 1, 12, 2, 3, 4, 5]
    (summary,) = receiver.summaries
    assert (summary["alerts"], summary["first_id"], summary["last_id"]) == (6, 6, 11)
    assert ids_posted(receiver) == list(range(13))
    assert notifier.merged == 6


def alerts_count(post: str, outcome: str) -> float:
    labels = {"post": post, "outcome": outcome}
    return REGISTRY.get_sample_value("sqreen_webhook_alerts_total", labels) or 0.0


def test_a_sustained_flood_never_holds_back_another_key_of_its_playbook() -> None:
    """Forged alerts of one playbook, each for a new address, keep coming faster than the
    webhook takes them (20 more at each post it receives); the real attacker's alert, of the
    same playbook, is posted within a few posts, never dropped, and the flood is counted in
    summaries."""
    receiver = Recorder()
    receiver.gate.set()
    notifier = Notifier("s", backoff=0.01)
    url = (receiver.url,)
    submitted = 0
    flooding = True

    def forge(count: int) -> None:
        nonlocal submitted
        for _ in range(count):
            submitted += 1
            notifier.submit(url, alert("brute-force-ip", submitted))

    def on_post() -> None:
        if flooding:
            forge(20)

    before = {k: alerts_count(*k) for k in (("alert", "sent"), ("summary", "sent"))}
    receiver.on_post = on_post
    try:
        forge(200)
        assert wait_until(lambda: len(receiver.posts) >= 3)
        at = len(receiver.posts)
        notifier.submit(url, alert("brute-force-ip", 0, "203.0.113.9"))
        assert wait_until(lambda: receiver.index_of("203.0.113.9") is not None, timeout=10)
        seen = receiver.index_of("203.0.113.9")
        assert seen is not None
        # At most: the post in flight, BURST alone, then the summary holding it.
        assert seen - at < BURST + 2, (seen, at)
        flooding = False
        assert notifier.join(30)
    finally:
        notifier.close()
        receiver.close()
    summaries = receiver.summaries
    assert summaries, "the flood was never summarised"
    assert sum(s["alerts"] for s in summaries) == notifier.merged
    assert len(receiver.alone) + notifier.merged == submitted + 1  # none dropped
    assert all(s["unlisted"] == 0 for s in summaries)
    assert all(receiver.signed)
    assert alerts_count("summary", "sent") - before[("summary", "sent")] == notifier.merged
    assert alerts_count("alert", "sent") - before[("alert", "sent")] == len(receiver.alone)


def test_a_summary_names_its_first_keys_and_counts_the_others(receiver: Recorder) -> None:
    notifier = Notifier("s", backoff=0.01, burst=1, most_keys=2)
    keys = ["a", "b", "a", "c", "d", "b"]
    try:
        notifier.submit((receiver.url,), alert("p", 0, "first"))
        assert receiver.holding.wait(10)
        notifier.submit((receiver.url,), alert("p", 1, "alone"))
        for n, key in enumerate(keys, 2):
            notifier.submit((receiver.url,), alert("p", n, key))
        receiver.gate.set()
        assert notifier.join(30)
    finally:
        notifier.close()
    assert [a["group_key"] for a in receiver.alone] == ["first", "alone"]
    assert receiver.summaries == [
        {
            "playbook": "p",
            "group_by": "ip",
            "alerts": 6,
            "group_keys": {"a": 2, "b": 2},  # a key already named costs no room
            "unlisted": 2,
            "first_id": 2,
            "last_id": 7,
            "first_created_at": "2025-01-01T00:00:02Z",
            "last_created_at": "2025-01-01T00:00:07Z",
        }
    ]
    assert all(receiver.signed)


def test_a_receiver_trickling_its_reply_lets_the_lane_go_on_at_the_timeout() -> None:
    """Headers a line every 20 ms, for ever: each read is in time, so only a deadline on the
    whole post ends it; the lane then posts what waits (it stayed on the first for good)."""
    closed = threading.Event()

    def answer(conn: socket.socket, method: str, target: str, body: bytes) -> None:
        if target == "/slow":
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not closed.wait(0.02):
                conn.sendall(b"X-Slow: y\r\n")
        else:
            conn.sendall(http_reply("204 No Content", b""))

    server = RawServer(answer, closed)
    notifier = Notifier(timeout=0.5, tries=1)
    try:
        notifier.submit((server.url + "/slow",), alert("brute-force-ip", 1))
        notifier.submit((server.url + "/slow",), alert("account-takeover", 2))
        assert notifier.join(30), "a post never ended"
        assert (notifier.sent, notifier.failed) == (0, 2)
        notifier.submit((server.url + "/ok",), alert("account-takeover", 3))
        assert notifier.join(30)
        assert notifier.sent == 1
    finally:
        server.close()


@pytest.mark.parametrize("char", ["a", "é", "\x01", "😀"])
def test_a_summary_names_keys_up_to_a_bound_in_bytes_as_posted(
    receiver: Recorder, char: str
) -> None:
    """Group keys of users can be kilobytes long: 1 000 of them made a summary of megabytes,
    which a receiver's body limit refuses whole. The keys named stop at MOST_KEY_BYTES as the
    post's JSON writes them (an accented letter escaped to 6 bytes, a control character to
    6, an emoji to 12); the alerts of the others are counted, and a key already named is
    still counted by name."""
    notifier = Notifier("s", backoff=0.01, burst=1)
    long_keys = [f"{n:04d}" + char * 1000 for n in range(400)]
    try:
        notifier.submit((receiver.url,), alert("p", 0, "first"))
        assert receiver.holding.wait(10)
        notifier.submit((receiver.url,), alert("p", 1, "alone"))
        for n, key in enumerate([*long_keys, long_keys[0]], 2):
            notifier.submit((receiver.url,), alert("p", n, key))
        receiver.gate.set()
        assert notifier.join(30)
    finally:
        notifier.close()
    (summary,) = receiver.summaries
    named = summary["group_keys"]
    assert list(named) == long_keys[: len(named)]
    assert named[long_keys[0]] == 2
    posted = len(json.dumps(named))
    assert MOST_KEY_BYTES // 2 < posted <= MOST_KEY_BYTES + 8 * len(named)
    assert summary["alerts"] == 401
    assert summary["unlisted"] == 401 - 1 - len(named)


def test_a_failed_post_is_said_without_the_url_s_secrets(caplog: pytest.LogCaptureFixture) -> None:
    """Slack's and Teams' webhook URLs carry their token in the path; others put one in the
    query, or credentials before the host: the log says the scheme and host only."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]  # nobody listens there
        url = f"http://user:p4ss@127.0.0.1:{port}/services/T0/B0/SECRETTOKEN?token=abc"
        notifier = Notifier(timeout=0.5, tries=2, backoff=0.01)
        with caplog.at_level("WARNING", "sqreen.server"):
            notifier.submit((url,), alert("brute-force-ip", 1))
            assert notifier.join(30)
    assert notifier.failed == 1
    (said,) = [r.getMessage() for r in caplog.records if "webhook" in r.getMessage()]
    assert f"webhook http://127.0.0.1:{port}/... failed after 2 tries" in said
    for secret in ("p4ss", "SECRETTOKEN", "abc", "user"):
        assert secret not in said
    # Which alert was lost, for `sqreen alerts` (the line named none).
    assert said.endswith("; alert #1 of brute-force-ip not posted"), said


def test_a_redirect_is_said_as_one_and_not_followed(caplog: pytest.LogCaptureFixture) -> None:
    """A webhook URL that moved (``http`` to ``https``, a renamed path) answers 3xx: the
    alert is not posted there (its signature is for the URL given), and the log says where
    to point the webhook, without the new URL's secrets either."""
    posts: list[str] = []

    class Moved(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            posts.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(302)
            self.send_header("Location", "https://hooks.example.com/T0/NEWTOKEN?key=k\x1b[2J")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Moved)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    notifier = Notifier(timeout=2, tries=3, backoff=0.01)
    try:
        with caplog.at_level("WARNING", "sqreen.server"):
            notifier.submit((f"http://127.0.0.1:{server.server_port}/hook",), alert("p", 1))
            assert notifier.join(30)
    finally:
        notifier.close()
        server.shutdown()
        server.server_close()
    assert posts == ["/hook"]  # once: not followed, not tried again
    (said,) = [r.getMessage() for r in caplog.records if "webhook" in r.getMessage()]
    assert "failed after 1 try (" in said
    assert "HTTP 302, a redirect to https://hooks.example.com/... (not followed" in said
    assert "NEWTOKEN" not in said and "\x1b" not in said


def test_what_an_alert_s_events_say_is_read_when_posted_once_and_never_for_a_summary(
    receiver: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """``more`` (the addresses and users behind an alert, read from the store) is read on a
    lane's thread when the alert is first posted: once for several URLs, never for the
    alerts merged into a summary (a flood reads nothing more per alert), and a failure
    posts the alert without it."""
    second = Recorder()
    second.gate.set()
    reads: list[int] = []
    ingest = threading.get_ident()

    def more(n: int) -> Callable[[], dict[str, Any]]:
        def read() -> dict[str, Any]:
            assert threading.get_ident() != ingest  # never on the submitting thread
            reads.append(n)
            if n == 3:
                raise OSError("the database is away")
            return {"addresses": [{"ip": f"12.0.0.{n}", "events": n}], "users": []}

        return read

    notifier = Notifier("s", backoff=0.01)
    try:
        notifier.submit((receiver.url, second.url), alert("p", 0), more(0))
        assert receiver.holding.wait(10)
        for n in range(1, 40):  # BURST wait alone, the rest are merged
            notifier.submit((receiver.url,), alert("p", n), more(n))
        receiver.gate.set()
        assert notifier.join(30)
    finally:
        notifier.close()
        second.close()
    assert sorted(reads) == list(range(BURST + 1))  # each once, the merged ones never
    by_id = {p["alert"]["id"]: p for p in receiver.posts if "alert" in p}
    assert by_id[2]["addresses"] == [{"ip": "12.0.0.2", "events": 2}]
    assert "addresses" not in by_id[3] and by_id[3]["alert"]["id"] == 3  # posted without
    assert second.posts == [by_id[0]]  # the same body to both URLs
    said = [r.getMessage() for r in caplog.records if "without its events" in r.getMessage()]
    assert said == [
        "sqreen: a webhook alert is posted without its events' addresses and users: "
        "OSError: the database is away"
    ]


def test_alerts_left_at_stop_are_said_by_receiver(
    receiver: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A collector stopping while alerts wait (a receiver hanging): they went unsaid."""
    before = set(threading.enumerate())
    notifier = Notifier("s", backoff=0.01)
    notifier.submit((receiver.url + "?token=SECRET",), alert("p", 0))
    assert receiver.holding.wait(10)  # the first is being posted, held
    (lane,) = [t for t in set(threading.enumerate()) - before if t.name == "sqreen-webhook"]
    for n in range(1, 4):
        notifier.submit((receiver.url + "?token=SECRET",), alert("p", n))
    notifier.close(wait=0.2)
    receiver.gate.set()
    # What was said unposted stays so: the lane's thread ends after its post in flight
    # (it went on posting them, reading a store the collector had closed).
    lane.join(10)
    assert not lane.is_alive()
    assert [a["id"] for a in receiver.alone] == [0]
    said = [r.getMessage() for r in caplog.records if "at stop" in r.getMessage()]
    host = receiver.url.split("/hook")[0]
    assert said == [
        f"sqreen: webhook {host}/...: 3 alerts not posted at stop, 1 being posted "
        "(`sqreen alerts` lists them all)"
    ]
    quiet = Notifier("s")
    quiet.submit((receiver.url,), alert("p", 9))
    quiet.close(wait=10)  # posted within the wait: nothing to say
    assert [a["id"] for a in receiver.alone][-1] == 9
    assert len([r for r in caplog.records if "at stop" in r.getMessage()]) == 1
