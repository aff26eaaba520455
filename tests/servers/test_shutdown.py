"""Events tracked just before a real server stops are delivered, once, however it is stopped;
with a collector that never answers, they are all kept in the spool, and the log says so.

Each server runs in a subprocess with ``SQREEN_FLUSH_INTERVAL=3600``, so that nothing leaves
before the stop: what arrives was delivered by the stop itself (a SIGTERM handler, the
``multiprocessing`` finalizer of a worker that ends in ``os._exit``, ``atexit``, the ASGI
middleware at lifespan shutdown, or the end of uvicorn's shutdown; see
``docs/architecture.md``, "fork and exit").
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.integrations._servers import wait_until
from tests.receiver import Receiver, SilentServer

from ._harness import Served

pytestmark = pytest.mark.slow

REQUESTS = 4
QUIET = {"SQREEN_FLUSH_INTERVAL": "3600", "SQREEN_HEARTBEAT_INTERVAL": "3600"}

GRANIAN = [
    *("python", "-m", "granian", "--host", "127.0.0.1", "--port", "{port}"),
    *("--workers", "1", "--log-level", "warning"),
]
HYPERCORN = ["python", "-m", "hypercorn", "--bind", "127.0.0.1:{port}", "--workers", "1"]
UVICORN = ["python", "-m", "uvicorn", "--port", "{port}", "--log-level", "warning"]
GUNICORN = ["python", "-m", "gunicorn", "--bind", "127.0.0.1:{port}", "--workers", "1", "-k"]
ASGI, WSGI = "tests.servers.apps:asgi_app", "tests.servers.apps:wsgi_app"
HTTP_ONLY = "tests.servers.apps:asgi_app_http_only"  # refuses the lifespan, as Django's
# Its middleware is built at the first lifespan event or request, under uvicorn's handler.
FASTAPI = "tests.servers.fastapi_app:app"

SERVERS = {
    # granian's workers are multiprocessing processes: they end in os._exit.
    "granian-asgi": [*GRANIAN, "--interface", "asgi", ASGI],
    "granian-asginl": [*GRANIAN, "--interface", "asginl", ASGI],  # no lifespan flush first
    "granian-wsgi": [*GRANIAN, "--interface", "wsgi", "--blocking-threads", "2", WSGI],
    # A hypercorn worker keeps SIGTERM's default: its master stops it through an event.
    "hypercorn-asgi": [*HYPERCORN, ASGI],
    # WSGI on hypercorn: the client is made on a thread, where no signal handler can be set.
    "hypercorn-wsgi": [*HYPERCORN, WSGI],
    "waitress": ["python", "-m", "waitress", "--host", "127.0.0.1", "--port", "{port}", WSGI],
    # uvicorn re-raises SIGTERM into the handler it found once it has shut down, then returns;
    # without lifespan, no flush comes first.
    "uvicorn-no-lifespan": [*UVICORN, "--lifespan", "off", ASGI],
    # uvicorn restores the default SIGTERM it found and raises it again: the process dies
    # unless the delivery follows its shutdown (or the lifespan's kept what was left).
    "uvicorn-fastapi": [*UVICORN, FASTAPI],
    "uvicorn-fastapi-no-lifespan": [*UVICORN, "--lifespan", "off", FASTAPI],
    # Each worker imports the app inside serve(), under uvicorn's handler, whatever the app.
    "uvicorn-workers": [*UVICORN, "--workers", "2", ASGI],
    "uvicorn-workers-no-lifespan": [*UVICORN, "--workers", "2", "--lifespan", "off", FASTAPI],
    "gunicorn-uvicorn-worker": [*GUNICORN, "uvicorn.workers.UvicornWorker", FASTAPI],
    "gunicorn-uvicorn-worker-no-lifespan": [
        *(*GUNICORN, "tests.servers.workers.NoLifespanWorker", FASTAPI),
    ],
    # The middleware built in the master, the client made in the worker at its first
    # request, on a thread (off the loop): the exit hooks must still be set on the main one.
    "gunicorn-preload-uvicorn-worker-no-lifespan": [
        *(*GUNICORN, "tests.servers.workers.NoLifespanWorker", "--preload", ASGI),
    ],
    # The same with the lifespan on, refused by the app (as Django's): the lifespan's start
    # makes the client, on a thread, and nothing is delivered at the lifespan's end.
    "gunicorn-preload-uvicorn-worker-app-without-lifespan": [
        *(*GUNICORN, "uvicorn.workers.UvicornWorker", "--preload", HTTP_ONLY),
    ],
    # And with sqreen.init() in the master: each worker's client is the master's, inherited.
    "gunicorn-preload-init-uvicorn-worker-app-without-lifespan": [
        *(*GUNICORN, "uvicorn.workers.UvicornWorker", "--preload", "tests.servers.apps_init:app"),
    ],
    # Django's chain run sync under ASGI (a sync-only middleware after ours): the first
    # request reaches sqreen on a thread of asgiref's, the client the master's.
    "gunicorn-preload-uvicorn-worker-django-sync-chain": [
        *(*GUNICORN, "uvicorn.workers.UvicornWorker", "--preload"),
        "tests.servers.django_sync_chain:application",
    ],
    "flask-run": [
        *("python", "-m", "flask", "--app", "tests.servers.flask_app"),
        *("run", "--port", "{port}"),
    ],
}

#: How each server is stopped: (signal, to whom). "group" is systemd's default: every process
#: of the service at once; SIGINT is Ctrl-C.
HOW = {
    "granian-asgi": [(signal.SIGTERM, "group"), (signal.SIGINT, "main")],
    "granian-asginl": [(signal.SIGTERM, "main")],
    # (SIGINT to the whole group sometimes hangs granian's WSGI mode, sqreen or not.)
    "granian-wsgi": [(signal.SIGTERM, "main"), (signal.SIGTERM, "group")],
    "hypercorn-asgi": [(signal.SIGTERM, "group"), (signal.SIGTERM, "workers")],
    "hypercorn-wsgi": [(signal.SIGTERM, "group"), (signal.SIGTERM, "workers")],
    "waitress": [(signal.SIGTERM, "main"), (signal.SIGINT, "main")],
    "uvicorn-no-lifespan": [(signal.SIGTERM, "main")],
    "uvicorn-fastapi": [(signal.SIGTERM, "main"), (signal.SIGINT, "main")],
    "uvicorn-fastapi-no-lifespan": [(signal.SIGTERM, "main")],
    "uvicorn-workers": [(signal.SIGTERM, "main")],
    "uvicorn-workers-no-lifespan": [(signal.SIGTERM, "main"), (signal.SIGTERM, "group")],
    "gunicorn-uvicorn-worker": [(signal.SIGTERM, "main")],
    "gunicorn-uvicorn-worker-no-lifespan": [(signal.SIGTERM, "main"), (signal.SIGTERM, "group")],
    "gunicorn-preload-uvicorn-worker-no-lifespan": [(signal.SIGTERM, "main")],
    "gunicorn-preload-uvicorn-worker-app-without-lifespan": [(signal.SIGTERM, "main")],
    "gunicorn-preload-init-uvicorn-worker-app-without-lifespan": [(signal.SIGTERM, "main")],
    "gunicorn-preload-uvicorn-worker-django-sync-chain": [(signal.SIGTERM, "main")],
    "flask-run": [(signal.SIGTERM, "main"), (signal.SIGINT, "main")],
}
STOPS = [(name, sig, target) for name, stops in HOW.items() for sig, target in stops]

#: Servers whose worker may never see the SIGTERM sent to it, sqreen or not, so the stop
#: sends it again (:meth:`Served.stop`'s ``resend``). granian's WSGI worker waits on its main
#: thread in ``threading.Event.wait()`` with no timeout, for its Python handler to set it;
#: CPython runs that handler on the main thread only, and only once that thread runs Python
#: code again. The kernel gives a process's signal to any thread that does not block it: a
#: thread tokio starts at that instant takes it as it unblocks its signals (traced with
#: ``signal_generate``/``signal_deliver`` and ``sched_process_fork``: the worker's SIGTERM
#: delivered to a ``tokio-rt-worker`` forked 0.6 ms before, once in 50 to 100 stops under
#: load; the same with this app's bare handler, no sqreen), and the worker serves on
#: forever. sqreen's own threads block those signals (``sqreen/_threads.py``); granian's ASGI
#: workers wait in an event loop, which the signal's wakeup fd wakes from any thread.
LOST_SIGTERM: frozenset[str] = frozenset({"granian-wsgi"})


def _track(server: Served, first: int) -> tuple[list[int], set[int]]:
    numbers = list(range(first, first + REQUESTS))
    pids = set()
    for n in numbers:
        answer = server.get(f"/track?n={n}")
        assert isinstance(answer, dict), f"status {answer}:\n{server.output()}"
        pids.add(answer["pid"])
    return numbers, pids


def _delivered_once(receiver: Receiver, numbers: list[int], server: Served) -> None:
    def arrived() -> list[int]:
        return [e["properties"]["n"] for e in receiver.events if e["name"] == "server.event"]

    wait_until(lambda: len(arrived()) >= len(numbers), timeout=30)  # returns on delivery
    counts = Counter(arrived())
    assert sorted(counts) == numbers, f"delivered {dict(counts)}\n{server.output()}"
    assert set(counts.values()) == {1}, f"delivered twice: {dict(counts)}"
    ids = receiver.ids()
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("name", "sig", "target"),
    STOPS,
    ids=[f"{name}-{signal.Signals(sig).name}-{target}" for name, sig, target in STOPS],
)
def test_events_tracked_before_a_stop_are_delivered_once(
    receiver: Receiver, name: str, sig: int, target: str
) -> None:
    server = Served(SERVERS[name], receiver, QUIET)
    try:
        numbers, pids = _track(server, 0)
        assert receiver.wait_for(1, timeout=0.3) == [], "an event left before the stop"
        server.stop(sig, target, pids, resend=pids if name in LOST_SIGTERM else frozenset())
        _delivered_once(receiver, numbers, server)
    finally:
        server.kill()


def test_granian_reload_delivers_what_the_old_workers_tracked(receiver: Receiver) -> None:
    """SIGHUP: granian starts new workers and stops the old ones (a graceful stop that the
    server survives); what the old ones tracked arrives without waiting for the next stop."""
    server = Served([*SERVERS["granian-wsgi"], "--respawn-interval", "0.1"], receiver, QUIET)
    try:
        numbers, old = _track(server, 0)
        server.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: len(receiver.events) >= REQUESTS, timeout=15), server.output()
        assert wait_until(server.ready), "no worker after the reload"  # granian has a gap
        more, new = _track(server, REQUESTS)
        assert not new & old, "the reload kept a worker"
        server.stop(signal.SIGTERM, resend=new)  # "granian-wsgi" is in LOST_SIGTERM
        _delivered_once(receiver, numbers + more, server)
    finally:
        server.kill()


#: Stopped with SIGTERM while the collector accepts connections and never answers.
HUNG = [
    "uvicorn-no-lifespan",
    "uvicorn-fastapi",
    "uvicorn-fastapi-no-lifespan",
    "uvicorn-workers",
    "gunicorn-uvicorn-worker",
    "waitress",
    "hypercorn-asgi",
]


def _spooled(spool: Path) -> list[int]:
    numbers = []
    for path in spool.glob("*/*.batch"):
        for line in path.read_bytes().splitlines():
            event = json.loads(line)
            if event["name"] == "server.event":
                numbers.append(event["properties"]["n"])
    return sorted(numbers)


@pytest.mark.parametrize("name", HUNG)
def test_what_a_hung_collector_did_not_take_is_spooled_and_said(tmp_path: Path, name: str) -> None:
    """Nothing is lost, nor silently: the stop ends within the shutdown timeouts, with every
    event in the spool for the next process, and a line saying how many and where."""
    collector = SilentServer()
    env = {**QUIET, "SQREEN_SHUTDOWN_TIMEOUT": "1", "SQREEN_SPOOL": str(tmp_path)}
    server = Served(SERVERS[name], None, {**env, "SQREEN_ENDPOINT": collector.url})
    try:
        numbers, _pids = _track(server, 0)
        server.stop(signal.SIGTERM)
        output = server.output()
        assert _spooled(tmp_path) == numbers, output
        assert "events not delivered at shutdown" in output, output
        assert f"kept in {tmp_path}" in output, output
    finally:
        server.kill()
        collector.close()
