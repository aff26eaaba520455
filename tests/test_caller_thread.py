"""track() does no I/O on the caller's thread, even when the collector hangs.

The latency itself (p99 of track() against a collector that never answers) is measured by
bench/bench_track.py and reported in the README; here we assert the property behind it:
the calling thread opens no file and no socket while the flusher is stuck in a network read.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import sqreen
from sqreen._context import RequestContext, current_request
from tests.receiver import SilentServer

_watch = threading.local()
_seen: list[tuple[str, str]] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if getattr(_watch, "on", False) and (
        event.startswith(("socket.", "os.", "shutil.", "subprocess.")) or event == "open"
    ):
        _seen.append((event, repr(args)[:120]))


sys.addaudithook(_hook)


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_track_does_no_io_while_the_collector_hangs(
    silent: SilentServer, record_property: Any
) -> None:
    client = sqreen.init(endpoint=silent.url, flush_interval=0.05, max_queue_size=50_000)
    sqreen.track("warm.up")
    sqreen.flush(timeout=0.3)  # the flusher is now stuck waiting for an answer
    assert silent.conns, "the flusher never connected"
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/login",
        "QUERY_STRING": "next=/home&password=hunter2",
        "REMOTE_ADDR": "203.0.113.9",
        "HTTP_USER_AGENT": "curl/8",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
    }
    ctx = RequestContext(client, "wsgi", environ)
    durations = []
    _seen.clear()
    _watch.on = True
    try:
        for i in range(5_000):
            t0 = time.perf_counter()
            sqreen.track("auth.login.failure", properties={"attempt": i, "reason": "bad password"})
            durations.append(time.perf_counter() - t0)
        token = current_request.set(ctx)
        try:
            for i in range(5_000):
                t0 = time.perf_counter()
                sqreen.track("auth.login.failure", properties={"attempt": i})
                durations.append(time.perf_counter() - t0)
        finally:
            current_request.reset(token)
    finally:
        _watch.on = False
    assert _seen == []
    assert client.stats()["sent"] == 0  # the collector never answered
    assert client.stats()["queue_depth"] >= 10_000
    durations.sort()
    record_property(
        "track_p99_us_while_collector_hangs", round(durations[int(len(durations) * 0.99)] * 1e6, 2)
    )
