"""The cost of ``track()`` on the caller's thread, beside its peers, in one run.

    .venv/bin/python bench/bench_track.py

Rows, each measured in interleaved rounds so that machine noise hits them alike:

- ``deque.append``: the floor, what handing an object to another thread costs at best;
- ``sqreen.track`` outside a request, and inside a bound request context (WSGI environ);
- segment-analytics-python's ``track`` (its own queue and consumer thread, sending disabled);
- sentry-sdk's ``capture_message`` (transport replaced by one that drops everything).

Then the tail latency of ``track()`` while the collector accepts connections and never
answers (the flusher is stuck in a read: the caller must not notice), and the flusher's CPU
time per event (building the request part, parsing parameters, scrubbing, serialising), so
that moving work off the caller's thread is not mistaken for removing it.
"""

from __future__ import annotations

import gc
import os
import socket
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sqreen
from sqreen._context import RequestContext, current_request
from sqreen.transports.base import Reply

N = 20_000
ROUNDS = 7
PROPS = {"reason": "bad_password", "attempt": 3, "remember": True}
ENVIRON = {
    "REQUEST_METHOD": "POST",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/login",
    "QUERY_STRING": "next=%2Fhome&lang=en",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_X_FORWARDED_FOR": "203.0.113.7",
    "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
    "CONTENT_TYPE": "application/x-www-form-urlencoded",
}


class NullTransport:
    def send(
        self, envelope: dict[str, Any], events: list[bytes], timeout: float | None = None
    ) -> Reply:
        return Reply("ok")

    def heartbeat(self, payload: dict[str, Any]) -> Reply:
        return Reply("ok")

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        pass


class Body:
    def capture(self) -> tuple[tuple[bytes, ...], bool]:
        return (b"username=alice&password=hunter2&remember=on",), False


def per_call(fn: Callable[[], Any], n: int = N) -> list[float]:
    """Each call timed on its own (ns clock; the clock's own cost is subtracted)."""
    clock = time.perf_counter_ns
    times = []
    gc.disable()
    try:
        for _ in range(n):
            t0 = clock()
            fn()
            times.append(clock() - t0 - CLOCK_NS)
        return times
    finally:
        gc.enable()


def _clock_cost() -> int:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(10_000):
        t0 = clock()
        samples.append(clock() - t0)
    return sorted(samples)[5_000]


CLOCK_NS = _clock_cost()


def make_cases() -> dict[str, Callable[[], Any]]:
    cases: dict[str, Callable[[], Any]] = {}
    d: deque[Any] = deque(maxlen=1000)
    cases["deque.append (floor)"] = lambda: d.append(("x", PROPS))

    # Bounds far above what the run queues: every call below takes the accept path.
    client = sqreen.init(
        transport=NullTransport(), max_queue_size=10_000_000, max_queue_bytes=8 << 30
    )
    client.start()
    cases["sqreen.track, no request"] = lambda: sqreen.track("auth.login.failure", properties=PROPS)

    ctx = RequestContext(client, "wsgi", ENVIRON, body=Body())

    def in_request() -> None:
        token = current_request.set(ctx)
        sqreen.track("auth.login.failure", properties=PROPS)
        current_request.reset(token)

    cases["sqreen.track, in a request"] = in_request

    try:
        import segment.analytics as analytics

        seg = analytics.Client("write-key", send=False, max_queue_size=10_000_000)
        cases["segment analytics.track"] = lambda: seg.track("user-1", "Login Failed", PROPS)
    except Exception as exc:  # pragma: no cover - optional peer
        print(f"(segment-analytics-python unavailable: {exc})")

    try:
        import sentry_sdk
        from sentry_sdk.transport import Transport

        class Drop(Transport):
            def capture_envelope(self, envelope: Any) -> None:
                pass

        sentry_sdk.init(
            dsn="http://public@127.0.0.1:9/1", transport=Drop, default_integrations=False
        )
        cases["sentry_sdk.capture_message"] = lambda: sentry_sdk.capture_message("login failed")
    except Exception as exc:  # pragma: no cover - optional peer
        print(f"(sentry-sdk unavailable: {exc})")
    return cases


def compare() -> dict[str, tuple[float, float, float]]:
    """(median, p99, mean) seconds per call of each case, over interleaved rounds."""
    cases = make_cases()
    results: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        per_call(fn, 2000)  # warm up
    for _ in range(ROUNDS):
        for name, fn in cases.items():
            results[name].extend(per_call(fn))
    dropped = sqreen._hub.get_client().stats()["dropped"]
    if any(dropped.values()):  # then some calls took the cheaper drop path
        print(f"warning: sqreen dropped events during the run: {dropped}")
    sqreen.shutdown(timeout=2)
    out = {}
    for name, times in results.items():
        times.sort()
        out[name] = (
            times[len(times) // 2] / 1e9,
            times[int(len(times) * 0.99)] / 1e9,
            statistics.fmean(times) / 1e9,
        )
    return out


def tail_latency_while_collector_hangs() -> tuple[float, float, float]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    conns: list[socket.socket] = []
    threading.Thread(target=lambda: conns.append(sock.accept()[0]), daemon=True).start()
    client = sqreen.init(
        endpoint=f"http://127.0.0.1:{sock.getsockname()[1]}",
        flush_interval=0.01,
        max_queue_size=10_000_000,
    )
    sqreen.track("warm.up")
    sqreen.flush(timeout=0.3)
    times = []
    ctx = RequestContext(client, "wsgi", ENVIRON, body=Body())
    token = current_request.set(ctx)
    for _ in range(N):
        t0 = time.perf_counter()
        sqreen.track("auth.login.failure", properties=PROPS)
        times.append(time.perf_counter() - t0)
    current_request.reset(token)
    client.queue._closing = True  # the hanging send is not waited for
    sqreen.shutdown(timeout=0.1)
    sock.close()
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)], times[int(len(times) * 0.999)]


def flusher_cpu_per_event() -> tuple[float, float]:
    client = sqreen.init(transport=NullTransport())
    ctx = RequestContext(client, "wsgi", ENVIRON, body=Body())
    events = []
    for with_request in (False, True):
        token = current_request.set(ctx) if with_request else None
        for _ in range(5000):
            client.track("auth.login.failure", properties=PROPS)
        if token:
            current_request.reset(token)
        events.append(list(client.queue._queue))
        client.queue._queue.clear()
    out = []
    for batch in events:
        t0 = time.thread_time()
        for e in batch:
            client._encode(e)
        out.append((time.thread_time() - t0) / len(batch))
    client.queue._pending = 0
    sqreen.shutdown(timeout=0.1)
    return out[0], out[1]


def main() -> None:
    results = compare()
    ours = results["sqreen.track, no request"][0]
    print(f"\ntrack() cost on the caller's thread ({ROUNDS} interleaved rounds of {N} calls)\n")
    print(
        f"| {'call':<28} | {'median µs':>9} | {'p99 µs':>7} | {'mean µs':>7} "
        f"| {'median / sqreen':>15} |"
    )
    print(f"|{'-' * 30}|{'-' * 10}:|{'-' * 8}:|{'-' * 8}:|{'-' * 16}:|")
    for name, (median, p99, mean) in results.items():
        print(
            f"| {name:<28} | {median * 1e6:9.2f} | {p99 * 1e6:7.2f} | {mean * 1e6:7.2f} "
            f"| {median / ours:15.2f} |"
        )
    print(
        "\nThe mean includes the time the caller waits for the GIL while the flusher thread "
        "works on earlier events (sqreen, segment) or the SDK's own worker runs (sentry)."
    )
    p50, p99, p999 = tail_latency_while_collector_hangs()
    print(
        f"\nWhile the collector accepts connections and never answers (in a request): "
        f"p50 {p50 * 1e6:.2f} µs, p99 {p99 * 1e6:.2f} µs, p99.9 {p999 * 1e6:.2f} µs"
    )
    plain, with_request = flusher_cpu_per_event()
    print(
        f"Flusher CPU per event (wire form, parsing, scrubbing, JSON): "
        f"{plain * 1e6:.1f} µs without a request, {with_request * 1e6:.1f} µs with one"
    )


if __name__ == "__main__":
    main()
