"""Processes: delivery at exit, fork safety, and no thread in a pre-fork master."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

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


def test_preload_master_starts_no_thread(receiver: Receiver) -> None:
    proc = _run(
        """
        import os, threading, time, sqreen
        sqreen.init(endpoint=URL, flush_interval=0.5)
        sqreen.track("master.boot")              # what an app does at import, in the master
        assert threading.active_count() == 1, threading.enumerate()
        pids = []
        for w in range(2):
            pid = os.fork()
            if pid == 0:                          # a worker: serves a request and tracks
                from sqreen._context import RequestContext, current_request
                client = sqreen._hub.get_client()
                env = {"REQUEST_METHOD": "GET", "REMOTE_ADDR": "127.0.0.1"}
                current_request.set(RequestContext(client, "wsgi", env))
                sqreen.track("worker.request", properties={"w": w})
                sqreen.flush(timeout=10)
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        time.sleep(0.6)
        assert threading.active_count() == 1, threading.enumerate()
        print("threads-ok")
        """.replace("URL", repr(receiver.url))
    )
    assert proc.returncode == 0, proc.stderr
    assert "threads-ok" in proc.stdout
    names = sorted(e["name"] for e in receiver.events)
    # the master's own event is delivered at its exit, the workers' by their threads
    assert names == ["master.boot", "worker.request", "worker.request"]
