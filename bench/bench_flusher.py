"""The flusher's CPU per event, stage by stage, and the memory of a queued event.

    .venv/bin/python bench/bench_flusher.py

The event is ``bench/bench_track.py``'s: a failed login tracked in a WSGI request (a form body
``username=alice&password=hunter2&remember=on``, a query string, ``X-Forwarded-For`` from a
loopback proxy, three properties), and the same event outside a request. Every stage is timed
with ``time.thread_time`` (CPU time of this thread: the machine is shared, wall time is not
the measure) over rounds of events, the stages interleaved round by round, medians printed:

- the snapshot's accessors (forwarded header, content type, body chunks joined);
- client-IP resolution (``resolve_client_ip`` and ``watch_peer``);
- query and body parsing (``RequestSnapshot.params``);
- scrubbing (parameters, path, body text, properties);
- the parameters as ``encode_request`` gets them (:func:`sqreen._params.scrubbed_params`:
  parsed and scrubbed in one pass when it can);
- the whole wire dict (``encode_event``, all of the above);
- JSON (``dumps_utf8`` and UTF-8 encoding of that dict; ``wire_bytes``, in C with the
  ``speedups`` extra);
- ``_encode`` (the flusher's call per event: wire dict and JSON);
- gzip, per event of a batch of 500 (at the HTTP transport's level);
- ``track()`` on the caller's thread, for "caller + flusher".

Then the bytes each queued event holds (tracemalloc, events queued and not yet sent).

    .venv/bin/python bench/bench_flusher.py --compare REF

runs the whole measure in alternate processes on the package as of git ``REF`` (extracted
with ``git archive`` to a temporary directory) and as it is, three times each, and prints the
medians side by side: on a shared machine, CPU time per event moves with the load, and only
figures taken in alternation compare. ``--compare pure`` compares this tree without the
``speedups`` extra's C encoder (``SQREEN_NO_SPEEDUPS=1``) and with it.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# --compare runs this script on an older tree of the package: its sqreen is imported first.
sys.path.insert(0, os.environ.get("SQREEN_BENCH_ROOT") or sys.path[0])

import sqreen
from bench.bench_track import ENVIRON, PROPS, Body, NullTransport
from sqreen._client_ip import resolve_client_ip
from sqreen._context import RequestContext, current_request
from sqreen._event import QueuedEvent
from sqreen._ip_warnings import watch_peer
from sqreen._json import dumps_utf8

try:  # the wire's bytes, in C with the speedups extra (absent from older trees)
    from sqreen._json import wire_bytes
except ImportError:

    def wire_bytes(value: Any) -> bytes:
        return dumps_utf8(value).encode("utf-8")


from sqreen._request import text
from sqreen._wire import encode_event
from sqreen.transports.http import _gzip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 900  # below batch_size: the flusher thread never wakes for them
ROUNDS = 9


def _quiet_client() -> sqreen.Client:
    """A client whose flusher never runs during the measures (events are taken by hand)."""
    client = sqreen.init(
        transport=NullTransport(), flush_interval=3600, heartbeat_interval=3600, batch_size=1000
    )
    # No name is urgent: a login failure (watched by the collector's templates) would wake
    # the flusher at once and send the events being counted.
    client.queue.urgent = frozenset()
    client.track("warm.up")  # the flusher thread started, its first round done
    time.sleep(0.2)
    _take(client)
    return client


def _take(client: sqreen.Client) -> list[QueuedEvent]:
    queue = client.queue
    with queue._lock:
        events = list(queue._queue)
        queue._queue.clear()
        queue._pending = 0
        queue._pending_bytes = 0
    return events


def _events(
    client: sqreen.Client, in_request: bool, n: int, body: bool = False
) -> list[QueuedEvent]:
    ctx = RequestContext(client, "wsgi", ENVIRON, body=Body())
    token = current_request.set(ctx if in_request else None)
    try:
        for _ in range(n):
            client.track("auth.login.failure", properties=PROPS, collect_body=body)
    finally:
        current_request.reset(token)
    return _take(client)


def _stages(client: sqreen.Client, events: list[QueuedEvent]) -> dict[str, Callable[[], Any]]:
    config = client.config
    scrubber = config.scrubber
    snap = events[0].request
    stages: dict[str, Callable[[], Any]] = {}
    if snap is not None:
        body = snap.body()
        ctype = snap.media_type()
        params = snap.params(body, ctype)
        forwarded = text(snap.forwarded)
        trusted, header = config.trusted, config.client_ip_header
        resolve = getattr(trusted, "client_ip", None)

        def accessors() -> None:
            for e in events:
                r = e.request
                assert r is not None
                text(r.forwarded), r.media_type(), r.body(), r.decoded_path(), text(r.user_agent)

        def ip() -> None:
            for e in events:
                r = e.request
                assert r is not None
                if resolve is None:  # before client IPs were remembered
                    resolve_client_ip(r.peer, forwarded, trusted, header, r.peer_rewritten)
                else:
                    resolve(r.peer, forwarded, header, r.peer_rewritten)
                watch_peer(r.peer, forwarded, trusted, header, r.peer_rewritten)

        def parse() -> None:
            for e in events:
                r = e.request
                assert r is not None
                r.params(body, ctype)

        def scrub_params() -> None:
            for _ in events:
                scrubber.scrub(params)

        try:  # the one pass (absent from older trees)
            from sqreen._params import scrubbed_params
        except ImportError:
            scrubbed_params = None

        def one_pass() -> None:
            for e in events:
                r = e.request
                assert r is not None
                if scrubbed_params is None:
                    scrubber.scrub(r.params(body, ctype))
                else:
                    scrubbed_params(r, scrubber, body, ctype)

        def scrub_path() -> None:
            for e in events:
                r = e.request
                assert r is not None
                scrubber.scrub_path(r.decoded_path(), r.path_params)

        decoded = body.decode("utf-8", "replace")

        def scrub_body() -> None:
            for _ in events:
                scrubber.scrub_text_body(decoded, ctype)

        stages |= {
            "snapshot accessors": accessors,
            "client IP": ip,
            "query + body parsing": parse,
            "scrub params": scrub_params,
            "params, parsed + scrubbed (as encode_request)": one_pass,
            "scrub path": scrub_path,
            "scrub body text": scrub_body,
        }

    def scrub_props() -> None:
        for e in events:
            scrubber.scrub_properties(e.properties)

    wires = [encode_event(e, "p-1", config) for e in events]

    def wire() -> None:
        for e in events:
            encode_event(e, "p-1", config)

    def json_() -> None:
        for w in wires:
            dumps_utf8(w).encode("utf-8")

    def wire_json() -> None:
        for w in wires:
            wire_bytes(w)

    encode = client._encode

    def total() -> None:
        for e in events:
            encode(e)

    batch = b"[" + b",".join(encode(e) for e in events[:500]) + b"]"
    per_batch = len(events) // 500

    def gzip() -> None:
        for _ in range(per_batch):
            _gzip(batch)

    stages |= {
        "scrub properties": scrub_props,
        "wire dict (encode_event)": wire,
        "JSON (dumps + utf-8)": json_,
        "JSON (wire_bytes)": wire_json,
        "_encode (flusher, per event)": total,
        "gzip (batch of 500)": gzip,
    }
    return stages


def _cpu(fn: Callable[[], Any]) -> float:
    gc.disable()
    try:
        t0 = time.thread_time()
        fn()
        return time.thread_time() - t0
    finally:
        gc.enable()


KINDS = (  # label, in a request, collect_body
    ("in a request", True, False),
    ("in a request, collect_body", True, True),
    ("no request", False, False),
)


def flusher_stages() -> dict[str, dict[str, float]]:
    """Median µs of CPU per event of each stage, for each kind of event."""
    client = _quiet_client()
    out: dict[str, dict[str, float]] = {}
    for label, in_request, body in KINDS:
        events = _events(client, in_request, N, body)
        stages = _stages(client, events)
        times: dict[str, list[float]] = {name: [] for name in stages}
        for fn in stages.values():
            fn()  # warm up (caches filled as in a long-running process)
        for _ in range(ROUNDS):
            for name, fn in stages.items():
                times[name].append(_cpu(fn) / len(events) * 1e6)
        out[label] = {name: statistics.median(t) for name, t in times.items()}
    sqreen.shutdown(timeout=0.5)
    return out


def caller_cpu() -> dict[str, float]:
    """Median µs of CPU per ``track()`` call on the caller's thread (the real queue)."""
    client = _quiet_client()
    ctx = RequestContext(client, "wsgi", ENVIRON, body=Body())
    out: dict[str, list[float]] = {label: [] for label, _, _ in KINDS}
    for _ in range(ROUNDS):
        for label, in_request, body in KINDS:
            token = current_request.set(ctx if in_request else None)

            def calls(body: bool = body) -> None:
                for _ in range(N):
                    client.track("auth.login.failure", properties=PROPS, collect_body=body)

            out[label].append(_cpu(calls) / N * 1e6)
            current_request.reset(token)
            _take(client)
    sqreen.shutdown(timeout=0.5)
    return {k: statistics.median(v) for k, v in out.items()}


class _FreshBody:
    """What the tee holds of one request's body: its own bytes, as a server reads them."""

    def __init__(self, data: bytes) -> None:
        self.chunks = (bytes(bytearray(data)),)

    def capture(self) -> tuple[tuple[bytes, ...], bool]:
        return self.chunks, False


def bytes_per_queued_event() -> dict[str, float]:
    """tracemalloc's growth per event queued (and not yet sent), for each kind. Each request
    has its own environ strings and body bytes, as a server makes them, so what the snapshot
    keeps alive after the request is counted (shared objects would hide it)."""
    out = {}
    client = _quiet_client()
    (body,), _ = Body().capture()
    for event in _events(client, True, 1):  # a server has flushed events before
        client._encode(event)
    for label, in_request, collect in KINDS:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(N):
            environ = {k: (v + ".")[:-1] for k, v in ENVIRON.items()}  # new strings
            ctx = RequestContext(client, "wsgi", environ, body=_FreshBody(body))
            token = current_request.set(ctx if in_request else None)
            client.track("auth.login.failure", properties=PROPS, collect_body=collect)
            current_request.reset(token)
        del environ, ctx
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert len(_take(client)) == N, "the flusher took events during the count"
        out[label] = (after - before) / N
    sqreen.shutdown(timeout=0.5)
    return out


def measure() -> dict[str, dict[str, float]]:
    stages = flusher_stages()
    caller = caller_cpu()
    memory = bytes_per_queued_event()
    for label, _, _ in KINDS:
        stages[label]["track() (caller)"] = caller[label]
        flusher = (
            stages[label]["_encode (flusher, per event)"] + stages[label]["gzip (batch of 500)"]
        )
        stages[label]["caller + flusher"] = caller[label] + flusher
        stages[label]["bytes per queued event"] = memory[label]
    return stages


def _load() -> str:
    load = os.getloadavg()
    return f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs"


def compare(ref: str, runs: int = 3) -> None:
    """``ref`` is a git revision, or ``pure`` for this tree without the speedups extra
    (``SQREEN_NO_SPEEDUPS=1``)."""
    with tempfile.TemporaryDirectory() as old:
        if ref != "pure":
            archive = subprocess.run(
                ["git", "-C", REPO, "archive", ref, "sqreen"], check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        print(f"{_load()} at the start")
        got: dict[str, list[dict[str, dict[str, float]]]] = {ref: [], "now": []}
        for _ in range(runs):
            for name, root in ((ref, old), ("now", "")):
                env = {**os.environ, "SQREEN_BENCH_ROOT": root}
                env.pop("SQREEN_NO_SPEEDUPS", None)
                if name == "pure":
                    env |= {"SQREEN_BENCH_ROOT": "", "SQREEN_NO_SPEEDUPS": "1"}
                out = subprocess.run(
                    [sys.executable, __file__, "--json"], env=env, capture_output=True, text=True
                )
                got[name].append(json.loads(out.stdout.splitlines()[-1]))
        print(f"{_load()} at the end; medians of {runs} alternate runs each\n")
        for label, _, _ in KINDS:
            print(f"\n{label}\n\n| µs of CPU per event | {ref} | now | now / {ref} |")
            print("| --- | ---: | ---: | ---: |")
            for stage in got["now"][0][label]:
                a = statistics.median(r[label][stage] for r in got[ref])
                b = statistics.median(r[label][stage] for r in got["now"])
                print(f"| {stage} | {a:.2f} | {b:.2f} | {b / a:.2f} |")


def main() -> None:
    if sys.argv[1:2] == ["--json"]:
        print(json.dumps(measure()))
        return
    if sys.argv[1:2] == ["--compare"]:
        compare(sys.argv[2])
        return
    print(_load())
    results = measure()
    labels = [label for label, _, _ in KINDS]
    print(f"\nµs of CPU per event (median of {ROUNDS} interleaved rounds of {N} events)\n")
    print("| stage | " + " | ".join(labels) + " |")
    print("| --- |" + " ---: |" * len(labels))
    for name in results["in a request"]:
        cells = [results[label].get(name) for label in labels]
        print(f"| {name} | " + " | ".join("" if c is None else f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
