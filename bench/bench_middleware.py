"""The per-request cost of the middleware, beside the bare app and sentry-sdk, in one run.

    .venv/bin/python bench/bench_middleware.py [--rounds 9] [--instructions] [--no-servers]

In-process (the WSGI or ASGI app called directly), for Flask and FastAPI, each variant in its
own worker process (sentry-sdk patches the frameworks process-wide), measured in interleaved
rounds so that machine noise hits them alike:

- ``bare``: a hello-world route with a path parameter;
- ``sqreen``: with our middleware (extension) and no ``track()``;
- ``sqreen + track``: and one ``request.sqreen.track()`` per request;
- ``sentry``: with sentry-sdk's integration, and ``sentry + capture``: plus one
  ``capture_message`` per request (its transport drops everything, as ours does).

Our request path is timed with the flusher idle (a round holds fewer events than a batch); the
flusher's CPU per event (wire form, parameters, scrubbing, JSON) is then measured while it
drains the round, so moving work off the request is not mistaken for removing it.
``--instructions`` counts instructions per request under valgrind (deterministic, where
``perf stat -e instructions`` is not available), since a few µs is below the wall-clock noise
of a 2-core machine.

Then real servers on 127.0.0.1 (gunicorn's sync worker for Flask, uvicorn for FastAPI), one
process per variant, requests from this process one at a time: requests per second, the µs
each variant adds, and the server's CPU per request (from /proc, flusher included).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # a server of bench_servers.py --compare has REF's tree before it
    sys.path.insert(0, ROOT)

VARIANTS = ["bare", "sqreen", "sqreen + track", "sentry", "sentry + capture"]
SERVER_VARIANTS = ["bare", "sqreen", "sqreen + track"]
#: Servers only: the app of "sqreen + track" whose queue holds one event, so that every
#: ``track()`` is validated and its request snapshotted, then refused (queue full): what the
#: request path costs without what the flusher does with the event.
DROPPED = "sqreen + track, dropped"
PER_ROUND = 900  # fewer than a batch (1000): the flusher stays idle while a round is timed
PROPS = {"prop1": "value1", "prop2": "value2"}
HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
    "Accept": "application/json",
    "X-Forwarded-For": "203.0.113.7",
}


class NullTransport:
    """Drops every batch, as sentry's transport does below: only the SDKs' own work counts."""

    def send(self, envelope: Any, events: Any, timeout: Any = None) -> Any:
        from sqreen.transports.base import Reply

        return Reply("ok")

    def heartbeat(self, payload: Any) -> Any:
        from sqreen.transports.base import Reply

        return Reply("ok")

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        pass


def _sentry(framework: str) -> None:
    import sentry_sdk
    from sentry_sdk.transport import Transport

    class Drop(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            pass

    if framework == "flask":
        from sentry_sdk.integrations.flask import FlaskIntegration

        integrations: list[Any] = [FlaskIntegration()]
    else:
        from sentry_sdk.integrations.fastapi import FastApiIntegration
        from sentry_sdk.integrations.starlette import StarletteIntegration

        integrations = [StarletteIntegration(), FastApiIntegration()]
    sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", transport=Drop, integrations=integrations)


def _served() -> dict[str, Any]:
    """``/_bench`` of every bench app (bench_servers.py): the garbage collector's runs so far,
    by generation, and the file of the ``sqreen`` package served."""
    import sqreen

    return {"collections": [s["collections"] for s in gc.get_stats()], "sqreen": sqreen.__file__}


def make_flask(variant: str) -> Any:
    import flask

    if variant.startswith("sentry"):
        _sentry("flask")
    app = flask.Flask(__name__)
    if variant.startswith("sqreen"):
        from sqreen.integrations.flask import Sqreen

        Sqreen(app)

    app.get("/_bench")(_served)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        if variant == "sqreen + track":
            flask.request.sqreen.track("foobar", properties=PROPS)
        elif variant == "sentry + capture":
            import sentry_sdk

            sentry_sdk.capture_message("foobar")
        return {"item": item_id}

    return app


def make_fastapi(variant: str) -> Any:
    from fastapi import FastAPI

    import sqreen

    if variant.startswith("sentry"):
        _sentry("fastapi")
    app = FastAPI()
    if variant.startswith("sqreen"):
        from sqreen.integrations.fastapi import SqreenMiddleware

        app.add_middleware(SqreenMiddleware)

    # (No ``request: Request`` parameter: its annotation is a string here, which FastAPI cannot
    # resolve in this function's scope; sqreen.track() finds the request the same way.)
    app.get("/_bench")(_served)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> Any:
        if variant == "sqreen + track":
            sqreen.track("foobar", properties=PROPS)
        elif variant == "sentry + capture":
            import sentry_sdk

            sentry_sdk.capture_message("foobar")
        return {"item": item_id}

    return app


def flask_from_env() -> Any:
    """For gunicorn: ``bench.bench_middleware:flask_from_env()``, variant from the env."""
    return make_flask(os.environ.get("BENCH_VARIANT", "bare"))


def fastapi_from_env() -> Any:
    """For uvicorn: ``--factory bench.bench_middleware:fastapi_from_env``."""
    return make_fastapi(os.environ.get("BENCH_VARIANT", "bare"))


# -- in-process worker -----------------------------------------------------------------------


def wsgi_runner(app: Any) -> Callable[[int], None]:
    from werkzeug.test import EnvironBuilder

    template = EnvironBuilder(
        path="/items/42",
        query_string="page=2&q=shoes",
        headers=HEADERS,
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    ).get_environ()

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    def run(n: int) -> None:
        for _ in range(n):
            environ = dict(template)
            environ["wsgi.input"] = io.BytesIO(b"")
            result = app(environ, start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return run


def asgi_runner(app: Any) -> Callable[[int], None]:
    import asyncio

    headers = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/42",
        "raw_path": b"/items/42",
        "query_string": b"page=2&q=shoes",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> Any:
        return request

    async def send(message: Any) -> None:
        pass

    async def many(n: int) -> None:
        for _ in range(n):
            await app({**scope, "headers": list(headers)}, receive, send)

    loop = asyncio.new_event_loop()
    return lambda n: loop.run_until_complete(many(n))


def worker(framework: str, variant: str) -> None:
    """Serve ``run N`` commands on stdin: time N requests, answer JSON on stdout."""
    import sqreen

    client = None
    if variant.startswith("sqreen"):
        client = sqreen.init(
            transport=NullTransport(),
            max_queue_size=1_000_000,
            batch_size=1000,
            flush_interval=3600,
        )
    app = make_flask(variant) if framework == "flask" else make_fastapi(variant)
    run = wsgi_runner(app) if framework == "flask" else asgi_runner(app)
    run(300)  # warm up (and, for sqreen, start the flusher)
    if client is not None:
        client.flush(10)
    for line in sys.stdin:
        n = int(line.split()[1])
        t0 = time.perf_counter()
        run(n)
        elapsed = time.perf_counter() - t0
        flusher = 0.0
        if client is not None:
            c0 = time.process_time()
            client.flush(30)
            flusher = time.process_time() - c0
        print(json.dumps({"us": elapsed / n * 1e6, "flusher_us": flusher / n * 1e6}), flush=True)
    if client is not None:
        assert client.stats()["internal_errors"] == 0


def in_process(rounds: int) -> dict[tuple[str, str], dict[str, float]]:
    results: dict[tuple[str, str], dict[str, float]] = {}
    for framework in ("flask", "fastapi"):
        procs = {
            v: subprocess.Popen(
                [sys.executable, __file__, "--worker", framework, v],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for v in VARIANTS
        }
        samples: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for r in range(rounds):
            order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
            for v in order:
                proc = procs[v]
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(f"run {PER_ROUND}\n")
                proc.stdin.flush()
                samples[v].append(json.loads(proc.stdout.readline()))
        for v, proc in procs.items():
            assert proc.stdin is not None
            proc.stdin.close()
            if proc.wait(30) != 0:
                raise SystemExit(f"the {framework} {v} worker failed")
            us = [s["us"] for s in samples[v]]
            results[(framework, v)] = {
                "median": statistics.median(us),
                "min": min(us),
                "flusher": statistics.median(s["flusher_us"] for s in samples[v]),
            }
    return results


def instructions(framework: str, variant: str, n: int) -> int:
    """Instructions to serve ``n`` requests after start-up and warm-up, under valgrind."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--worker",
            framework,
            variant,
        ],
        input=f"run {n}\n" if n else "",
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    for line in out.stderr.splitlines():
        if "I   refs:" in line or "I refs:" in line:
            return int(line.split(":")[1].strip().replace(",", ""))
    raise RuntimeError(out.stderr[-2000:])


def instructions_per_request(n: int = 600) -> dict[tuple[str, str], float]:
    out = {}
    for framework in ("flask", "fastapi"):
        for variant in VARIANTS:
            # The worker flushes after the run: the flusher's instructions are included.
            out[(framework, variant)] = (
                instructions(framework, variant, n) - instructions(framework, variant, 0)
            ) / n
    return out


# -- real servers ----------------------------------------------------------------------------


def _tree_cpu_seconds(root: int) -> float:
    """User + system CPU of a process and all its descendants (gunicorn: master + worker)."""
    return _tree_cpu_split(root)[0]


def _tree_cpu_split(root: int) -> tuple[float, float]:
    """``(all, off the main threads)``: the CPU seconds of a process and its descendants,
    and the share of their threads other than each process's main one (the flusher: neither
    gunicorn's sync worker nor uvicorn runs a thread of its own).

    Read from each thread's ``schedstat`` (nanoseconds) where the kernel has it: ``stat``'s
    clock ticks (10 ms) quantised a round of 600 requests to 17 µs a request. A thread that
    ended during a round takes its time with it there; the servers' threads (the workers'
    main ones, the flusher, uvicorn's thread pool) live as long as they do."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
    total = main = 0.0
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            tids = []
        for tid in tids:
            seconds = _thread_cpu(pid, tid)
            total += seconds
            if tid == pid:
                main += seconds
        todo.extend(p for p, ppid in parents.items() if ppid == pid)
    return total, total - main


def _thread_cpu(pid: int, tid: int) -> float:
    """The CPU seconds of thread ``tid`` of ``pid`` (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:  # no schedstat: clock ticks
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(
        self,
        framework: str,
        variant: str,
        pin: bool = False,
        sqreen_env: Mapping[str, str] | None = None,
    ) -> None:
        """``pin``: the server's processes run on CPU 0 only (``bench_servers.py --pin``);
        ``sqreen_env``: ``SQREEN_*`` settings of the server (``--flush-interval``)."""
        from tests.integrations._servers import free_port, wait_for_port

        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
        # SQREEN_BENCH_ROOT: an older tree of the package, imported first (bench_servers.py).
        path = os.pathsep.join(filter(None, [os.environ.get("SQREEN_BENCH_ROOT"), ROOT]))
        env.update(BENCH_VARIANT=variant, PYTHONPATH=path, SQREEN_TRANSPORT="file:///dev/null")
        env.update(sqreen_env or {})
        if variant == DROPPED:
            env.update(BENCH_VARIANT="sqreen + track", SQREEN_MAX_QUEUE_SIZE="1")
        bind = f"127.0.0.1:{self.port}"
        if framework == "flask":
            app = "bench.bench_middleware:flask_from_env()"
            cmd = ["-m", "gunicorn", "-w", "1", "-b", bind, app]
        else:
            cmd = [
                "-m",
                "uvicorn",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
                "--factory",
                "bench.bench_middleware:fastapi_from_env",
            ]
        self.proc = subprocess.Popen(
            [sys.executable, *cmd],
            # The working directory comes first on the server's sys.path (``-m``, gunicorn's
            # ``chdir``): the tree whose package is served, else this tree's hid REF's.
            cwd=os.environ.get("SQREEN_BENCH_ROOT") or ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if pin else None,
        )
        if not wait_for_port(self.port, 30, self.proc):
            raise SystemExit(f"{framework} {variant} server did not start")
        self.keep_alive = framework == "fastapi"  # gunicorn's sync worker closes each one

    def run(self, n: int) -> tuple[float, float]:
        """(wall seconds, server CPU seconds) for n sequential requests."""
        import http.client

        conn = None
        cpu0, t0 = _tree_cpu_seconds(self.proc.pid), time.perf_counter()
        for _ in range(n):
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port)
            conn.request("GET", "/items/42?page=2&q=shoes", headers=HEADERS)
            conn.getresponse().read()
            if not self.keep_alive:
                conn.close()
                conn = None
        wall = time.perf_counter() - t0
        if conn is not None:
            conn.close()
        return wall, _tree_cpu_seconds(self.proc.pid) - cpu0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def servers(rounds: int, n: int = 1000) -> dict[tuple[str, str], dict[str, float]]:
    results = {}
    for framework in ("flask", "fastapi"):
        running = {v: Server(framework, v) for v in SERVER_VARIANTS}
        walls: dict[str, list[float]] = {v: [] for v in SERVER_VARIANTS}
        cpus: dict[str, float] = dict.fromkeys(SERVER_VARIANTS, 0.0)
        try:
            for server in running.values():
                server.run(200)  # warm up
            for r in range(rounds):
                order = SERVER_VARIANTS[r % 3 :] + SERVER_VARIANTS[: r % 3]
                for v in order:
                    wall, cpu = running[v].run(n)
                    walls[v].append(wall / n)
                    cpus[v] += cpu
        finally:
            for server in running.values():
                server.stop()
        for v in SERVER_VARIANTS:
            per_request = statistics.median(walls[v])
            results[(framework, v)] = {
                "us": per_request * 1e6,
                "rps": 1 / per_request,
                "cpu_us": cpus[v] / (rounds * n) * 1e6,
            }
    return results


# -- report ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--instructions", action="store_true", help="count them under valgrind")
    parser.add_argument("--no-servers", action="store_true")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        worker(*opts.worker)
        return

    print(f"In-process: {opts.rounds} interleaved rounds of {PER_ROUND} requests per variant\n")
    results = in_process(opts.rounds)
    counts = instructions_per_request() if opts.instructions else {}
    print(
        "| framework | variant | median µs/request | added µs | flusher µs/event |"
        + (" instructions/request | added |" if counts else "")
    )
    print("|---|---|--:|--:|--:|" + ("--:|--:|" if counts else ""))
    for (framework, variant), r in results.items():
        bare = results[(framework, "bare")]
        flusher = f"{r['flusher']:.1f}" if variant == "sqreen + track" else ""
        row = (
            f"| {framework} | {variant} | {r['median']:.1f} | "
            f"{r['median'] - bare['median']:+.1f} | {flusher} |"
        )
        if counts:
            c, base = counts[(framework, variant)], counts[(framework, "bare")]
            row += f" {c:,.0f} | {c - base:+,.0f} ({(c - base) / base:+.1%}) |"
        print(row)
    print(
        "\nThe flusher column is CPU on the flusher thread per tracked event, not on the request"
        " path; instructions include it."
    )
    if opts.no_servers:
        return
    print(
        f"\nReal servers on 127.0.0.1, one request at a time, {opts.rounds} interleaved rounds"
        " of 1000 (gunicorn sync worker for Flask, uvicorn for FastAPI)\n"
    )
    served = servers(opts.rounds)
    print("| server | variant | requests/s | µs/request | added µs | server CPU µs/request |")
    print("|---|---|--:|--:|--:|--:|")
    for (framework, variant), r in served.items():
        bare = served[(framework, "bare")]
        name = "gunicorn + Flask" if framework == "flask" else "uvicorn + FastAPI"
        print(
            f"| {name} | {variant} | {r['rps']:,.0f} | {r['us']:.0f} | "
            f"{r['us'] - bare['us']:+.1f} | {r['cpu_us']:.0f} |"
        )


if __name__ == "__main__":
    main()
