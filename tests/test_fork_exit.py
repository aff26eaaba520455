"""Processes: delivery at exit, fork safety, events from a main thread that keeps running."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import sqreen
import sqreen.transports
from tests.receiver import Receiver

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = ROOT
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        check=False,
    )


def test_script_that_exits_normally_delivers_everything(receiver: Receiver) -> None:
    proc = _run(
        """
        import sqreen
        sqreen.init(endpoint=URL, flush_interval=3600, shutdown_timeout=5)
        for i in range(1234):
            sqreen.track("script.event", properties={"i": i})
        """.replace("URL", repr(receiver.url))
    )
    assert proc.returncode == 0, proc.stderr
    assert len(receiver.events) == 1234
    assert len(set(receiver.ids())) == 1234


def test_fork_delivers_every_event_exactly_once(receiver: Receiver) -> None:
    proc = _run(
        """
        import os, sqreen
        sqreen.init(endpoint=URL, flush_interval=0.1)
        for i in range(100):
            sqreen.track("before.fork", properties={"i": i})
        sqreen.flush(timeout=0.01)   # the parent's flusher is running when we fork
        for i in range(100, 200):
            sqreen.track("before.fork", properties={"i": i})
        pid = os.fork()
        who = "child" if pid == 0 else "parent"
        for i in range(50):
            sqreen.track("after.fork", properties={"who": who, "i": i})
        if pid == 0:
            sqreen.flush(timeout=10)
            os._exit(0)   # like a worker killed by its master: no atexit
        os.waitpid(pid, 0)
        """.replace("URL", repr(receiver.url))
    )
    assert proc.returncode == 0, proc.stderr
    ids = receiver.ids()
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    before = sorted(e["properties"]["i"] for e in receiver.events if e["name"] == "before.fork")
    assert before == list(range(200))
    after = [e["properties"]["who"] for e in receiver.events if e["name"] == "after.fork"]
    assert sorted(after) == ["child"] * 50 + ["parent"] * 50


def test_preload_master_and_its_workers_deliver_every_event_once(receiver: Receiver) -> None:
    """A gunicorn --preload master tracks while it imports the app, its flusher runs, and a
    thread of it keeps tracking while it forks: every worker starts with no lock held (each
    tracks and flushes within its timeout) and every event arrives once."""
    proc = _run(
        """
        import os, threading, sqreen
        sqreen.init(endpoint=URL, flush_interval=0.05)
        sqreen.track("master.boot")              # what an app does at import, in the master
        stop = threading.Event()
        def busy():
            n = 0
            while not stop.is_set():
                for _ in range(20):                # bursts: the lock is often held at fork
                    sqreen.track("master.busy", properties={"n": n})
                    n += 1
                stop.wait(0.002)
        t = threading.Thread(target=busy)
        t.start()
        pids = []
        for w in range(8):
            pid = os.fork()
            if pid == 0:                          # a worker: serves a request and tracks
                import signal
                signal.alarm(20)                  # a lock held across fork would hang here
                from sqreen._context import RequestContext, current_request
                client = sqreen._hub.get_client()
                env = {"REQUEST_METHOD": "GET", "REMOTE_ADDR": "127.0.0.1"}
                current_request.set(RequestContext(client, "wsgi", env))
                sqreen.track("worker.request", properties={"w": w})
                ok = sqreen.flush(timeout=10)
                os._exit(0 if ok else 3)
            pids.append(pid)
        codes = [os.waitpid(pid, 0)[1] for pid in pids]
        stop.set()
        t.join()
        assert codes == [0] * 8, codes
        assert sqreen.flush(timeout=30)
        stats = sqreen._hub.active.stats()
        print("busy", stats["sent"] - 1)  # what was not dropped at the queue's bound
        """.replace("URL", repr(receiver.url))
    )
    assert proc.returncode == 0, proc.stderr
    ids = receiver.ids()
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    names = [e["name"] for e in receiver.events]
    assert names.count("master.boot") == 1
    assert sorted(
        e["properties"]["w"] for e in receiver.events if e["name"] == "worker.request"
    ) == (list(range(8)))
    busy = int(proc.stdout.split()[-1])
    assert names.count("master.busy") == busy > 0


def test_an_event_from_the_main_thread_leaves_within_the_flush_interval(
    receiver: Receiver,
) -> None:
    """A cron job, a Celery solo worker, a management command: tracked outside any request on
    the main thread, then the process keeps running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    env["PYTHONPATH"] = ROOT
    code = """
        import time, sqreen
        sqreen.init(endpoint=URL, flush_interval=0.2)
        sqreen.track("cron.run")
        print("tracked", flush=True)
        time.sleep(60)
        """.replace("URL", repr(receiver.url))
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "tracked\n"
        deadline = time.monotonic() + 0.2 + 1.0
        while not receiver.events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [e["name"] for e in receiver.events] == ["cron.run"]
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("how", ["process", "pool", "pool-maxtasks"])
def test_multiprocessing_fork_workers_deliver_at_their_exit(receiver: Receiver, how: str) -> None:
    """A worker forked by ``multiprocessing`` (a ``Process``, a ``Pool``'s, one replaced after
    each task as Celery's prefork pool replaces them) ends in ``os._exit``, after
    ``multiprocessing``'s own finalizers, which the fork cleared: what it tracked must leave
    then, with nothing flushed by the task."""
    proc = _run(
        """
        import multiprocessing as mp, sqreen
        sqreen.init(endpoint=URL, flush_interval=3600, shutdown_timeout=5)
        sqreen.track("parent.event")
        def task(i):
            sqreen.track("task.done", properties={"i": i})
            return i
        if __name__ == "__main__":
            ctx = mp.get_context("fork")
            if HOW == "process":
                workers = [ctx.Process(target=task, args=(i,)) for i in range(3)]
                for w in workers: w.start()
                for w in workers: w.join()
                assert [w.exitcode for w in workers] == [0, 0, 0]
            else:
                extra = {"maxtasksperchild": 1} if HOW == "pool-maxtasks" else {}
                with ctx.Pool(2, **extra) as pool:
                    assert pool.map(task, range(3)) == [0, 1, 2]
                    pool.close()
                    pool.join()
        """.replace("URL", repr(receiver.url)).replace("HOW", repr(how))
    )
    assert proc.returncode == 0, proc.stderr
    tasks = sorted(e["properties"]["i"] for e in receiver.events if e["name"] == "task.done")
    assert tasks == [0, 1, 2], proc.stderr
    assert [e["name"] for e in receiver.events].count("parent.event") == 1


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_workers_of_every_start_method_deliver(
    receiver: Receiver, tmp_path: Path, method: str
) -> None:
    """The agent's first line, ``sqreen.start()`` at the top of the main module, runs again in
    each worker of ``spawn`` and ``forkserver`` (they import ``__main__``) before
    ``multiprocessing`` clears the worker's finalizers; a ``forkserver`` worker then ends in
    ``os._exit``. Whatever the start method, what the tasks tracked must leave at the
    worker's exit, with nothing flushed by the task."""
    script = tmp_path / "pool_app.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing as mp, os, sqreen
            sqreen.start()
            def task(i):
                return sqreen.track("task.done", {"properties": {"i": i, "pid": os.getpid()}})
            if __name__ == "__main__":
                sqreen.track("parent.event")
                with mp.get_context(METHOD).Pool(2) as pool:
                    assert pool.map(task, range(4)) == [True] * 4
                    pool.close()
                    pool.join()
            """.replace("METHOD", repr(method))
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    env.update(
        PYTHONPATH=ROOT,
        SQREEN_ENDPOINT=receiver.url,
        SQREEN_FLUSH_INTERVAL="3600",
        SQREEN_SHUTDOWN_TIMEOUT="5",
        SQREEN_SPOOL="off",
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    tasks = sorted(e["properties"]["i"] for e in receiver.events if e["name"] == "task.done")
    assert tasks == [0, 1, 2, 3], proc.stderr
    assert [e["name"] for e in receiver.events].count("parent.event") == 1


def test_a_client_that_cannot_be_held_across_fork_leaves_the_sdk_s_locks_free() -> None:
    """A fork hook's error is reported and the fork goes on: a client that failed to be
    held stopped the release of the SDK's own locks, and the process's next
    sqreen.shutdown() (a test's teardown after a subprocess with preexec_fn) hung."""
    from sqreen import _hub

    class Broken:
        def before_fork(self) -> None:
            raise RuntimeError("cannot be held")

        after_fork_in_parent = after_fork_in_child = before_fork

    broken = Broken()
    sqreen.init(transport=sqreen.transports.MemoryTransport())
    _hub._clients.add(broken)  # type: ignore[arg-type]
    try:
        _hub._before_fork()
        _hub._after_fork_in_parent()
        assert _hub._lock.acquire(blocking=False)
        _hub._lock.release()
        assert sqreen.shutdown(1)  # returns, where it waited for ever
    finally:
        _hub._clients.discard(broken)  # type: ignore[arg-type]
