"""What outlives a process: undelivered events (the spool), the blocks in force, and the
last delivery when a server stops it with SIGTERM or ends its worker with os._exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import sqreen
from sqreen._spool import Spool
from tests.receiver import Receiver

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    env.update(PYTHONPATH=str(ROOT), SQREEN_APP_NAME="restart-test", **extra)
    return env


def _start(
    code: str, *args: str, wrapper: tuple[str, ...] = (), **env: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*wrapper, sys.executable, "-c", textwrap.dedent(code), *args],
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_line(proc: subprocess.Popen[str], expected: str, timeout: float = 30) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"no {expected!r}: {proc.communicate()[1][-2000:]}")


def _spool_then_die(
    receiver: Receiver, name: str, count: int, wrapper: tuple[str, ...] = (), **env: str
) -> None:
    """A process that tracks ``count`` events named ``name`` while the collector is down,
    is killed once they are all spooled; then the collector comes back."""
    url = receiver.url
    receiver.stop()
    first = _start(
        """
        import glob, os, sys, time, sqreen
        name, count = sys.argv[1], int(sys.argv[2])
        client = sqreen.init(flush_interval=0.05)
        for i in range(count):
            sqreen.track(name, properties={"i": i})
        def spooled():
            files = glob.glob(os.path.join(str(client.spool.directory), "*.batch"))
            return sum(open(f, "rb").read().count(b"\\n") for f in files)
        while spooled() < count:
            time.sleep(0.02)
        print("spooled", flush=True)
        time.sleep(60)
        """,
        name,
        str(count),
        wrapper=wrapper,
        SQREEN_ENDPOINT=url,
        **env,
    )
    _wait_line(first, "spooled")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    receiver.start()


def test_events_spooled_by_a_killed_process_are_sent_by_the_next(receiver: Receiver) -> None:
    _spool_then_die(receiver, "before.crash", 20)
    second = subprocess.run(
        [sys.executable, "-c", "import sqreen, time; sqreen.init(); sqreen.track('next.process');"
         " time.sleep(1); print(sqreen.flush(10))"],
        env=_env(SQREEN_ENDPOINT=receiver.url),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert second.stdout.strip() == "True", second.stderr
    names = sorted(e["name"] for e in receiver.events)
    assert names == ["before.crash"] * 20 + ["next.process"]
    assert sorted(e["properties"].get("i") for e in receiver.events if "i" in e["properties"]) == (
        list(range(20))
    )


#: A process of pid 1 in a pid namespace of its own, as in a container: each is a restart of the
#: same container (``--kill-child``: it dies with ``unshare``).
PID_1 = ("unshare", "--pid", "--fork", "--kill-child=SIGKILL")


def _pid_1_available() -> bool:
    try:
        done = subprocess.run([*PID_1, sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return done.stdout.strip() == "1"


@pytest.mark.skipif(not _pid_1_available(), reason="needs unshare --pid (root)")
def test_a_restarted_container_sends_what_its_previous_run_spooled(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The restart is pid 1 again, as the run that spooled was, on a persistent volume."""
    spool = {"SQREEN_SPOOL": str(tmp_path)}
    _spool_then_die(receiver, "before.restart", 5, wrapper=PID_1, **spool)
    code = (
        "import os, sqreen; sqreen.init(); sqreen.track('after.restart');"
        " print(os.getpid(), sqreen.flush(10))"
    )
    second = subprocess.run(
        [*PID_1, sys.executable, "-c", code],
        env=_env(SQREEN_ENDPOINT=receiver.url, **spool),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.stdout.split() == ["1", "True"], second.stderr
    names = sorted(e["name"] for e in receiver.events)
    assert names == ["after.restart"] + ["before.restart"] * 5
    assert not list(tmp_path.glob("*/*.batch"))
    assert not list(tmp_path.glob("*/*.lock"))  # the killed run's, and the restart's own


def test_an_event_tracked_after_the_delivery_at_exit_is_kept_for_the_next_process(
    receiver: Receiver, tmp_path: Path
) -> None:
    """A thread of the app still tracking once the exit has delivered: its events are kept in
    the spool (track() says True), and the next process sends them."""
    code = """
        import atexit

        def late():
            print([sqreen.track("late", properties={"i": i}) for i in range(2)])

        atexit.register(late)  # before sqreen registers its own: run after its delivery
        import sqreen

        sqreen.init(flush_interval=3600)
        sqreen.track("in.time")
        """
    env = _env(SQREEN_ENDPOINT=receiver.url, SQREEN_SPOOL=str(tmp_path))
    first = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert first.stdout.strip() == "[True, True]", first.stderr
    assert "'late' tracked after the delivery at shutdown: kept in" in first.stderr
    assert [e["name"] for e in receiver.events] == ["in.time"]
    code = "import sqreen; sqreen.init(); print(sqreen.flush(10))"
    second = subprocess.run([sys.executable, "-c", code], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert second.stdout.strip() == "True", second.stderr
    assert sorted(e["properties"].get("i", -1) for e in receiver.events) == [-1, 0, 1]


def test_events_spooled_for_one_key_are_sent_with_that_key_only(receiver: Receiver) -> None:
    """Two apps with one name (as every app run by uvicorn is named "uvicorn") on one
    machine: what one spooled for its collector and key is not sent by the other, with the
    other's key; the next process of the first sends it."""
    _spool_then_die(receiver, "app.a.secret", 5, SQREEN_TOKEN="sqk_app_a")
    # Each process sends its spool's batches, then says whether all it tracked left.
    code = textwrap.dedent(
        """
        import sys, time, sqreen
        client = sqreen.init()
        sqreen.track(sys.argv[1])
        deadline = time.monotonic() + 30
        while any(client.spool.directory.glob("*.batch")) and time.monotonic() < deadline:
            time.sleep(0.02)
        print(sqreen.flush(10))
        """
    )

    def run(token: str, name: str) -> None:
        done = subprocess.run(
            [sys.executable, "-c", code, name],
            env=_env(SQREEN_ENDPOINT=receiver.url, SQREEN_TOKEN=token),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.stdout.strip() == "True", done.stderr

    run("sqk_app_b", "app.b.event")
    assert sorted(e["name"] for e in receiver.events) == ["app.b.event"]
    run("sqk_app_a", "app.a.next")
    names = sorted(e["name"] for e in receiver.events)
    assert names == sorted(["app.a.next", "app.b.event"] + ["app.a.secret"] * 5)


def test_the_spool_is_one_directory_per_destination(tmp_path: Path) -> None:
    from sqreen._app import spool_of
    from sqreen._config import Config
    from sqreen.transports.http import HTTPTransport

    def directory(endpoint: str, token: str | None, spool: bool | str = True) -> Path:
        config = Config.resolve({"app_name": "uvicorn", "spool": spool})
        found = spool_of(config, HTTPTransport(endpoint, token), "p")
        assert found is not None
        return found.directory

    one = directory("http://127.0.0.1:9/", "sqk_a")
    assert one == directory("http://127.0.0.1:9", "sqk_a")  # the same collector and key
    assert one.name.startswith("uvicorn-")
    others = {
        directory("http://127.0.0.1:9", "sqk_b"),
        directory("http://127.0.0.1:10", "sqk_a"),
        directory("http://127.0.0.1:9", None),
    }
    assert one not in others and len(others) == 3
    assert "sqk_a" not in str(one)  # a digest, not the token
    chosen = directory("http://127.0.0.1:9", "sqk_a", str(tmp_path))
    assert chosen.parent == tmp_path and chosen.name == one.name.removeprefix("uvicorn-")
    assert chosen != directory("http://127.0.0.1:9", "sqk_b", str(tmp_path))


def _run_until_enforced_and_kept(receiver: Receiver) -> None:
    """A process that enforces the collector's block of 203.0.113.0/24 and has kept it in the
    spool for the next process, then killed."""
    first = _start(
        """
        import os, sqreen, time
        client = sqreen.init(flush_interval=0.05)
        client.start()
        # Enforced, and kept for the next process (the spool is written just after the set
        # is applied: a kill in between, microseconds, would leave the previous set).
        saved = os.path.join(str(client.spool.directory), "actions.json")
        while not (sqreen.is_blocked(ip="203.0.113.5") and os.path.exists(saved)):
            time.sleep(0.02)
        print("blocked", flush=True)
        time.sleep(60)
        """,
        SQREEN_ENDPOINT=receiver.url,
    )
    _wait_line(first, "blocked")
    first.kill()
    first.communicate()


def _first_requests(
    receiver: Receiver, ips: tuple[str, ...], **env: str
) -> subprocess.CompletedProcess[str]:
    """A new process's first requests through the WSGI middleware, one from each of ``ips``:
    it prints their statuses."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(
            f"""
            from sqreen.middleware.wsgi import SqreenWSGIMiddleware
            def app(environ, start_response):
                start_response("200 OK", [])
                return [b"served"]
            wrapped = SqreenWSGIMiddleware(app)
            statuses = []
            for ip in {ips!r}:
                environ = {{"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": ip}}
                list(wrapped(environ, lambda status, headers, *a: statuses.append(status)))
            print(statuses)
            """)],
        env=_env(SQREEN_ENDPOINT=receiver.url, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def test_a_restarted_worker_refuses_a_blocked_ip_before_reaching_the_collector(
    receiver: Receiver,
) -> None:
    receiver.block([{"id": "7", "type": "block_ip", "ip": "203.0.113.0/24", "expires_in": 600}])
    _run_until_enforced_and_kept(receiver)
    receiver.stop()  # the collector is down when the worker comes back
    second = _first_requests(receiver, ("203.0.113.5", "198.51.100.1"))
    assert second.stdout.strip() == "['403 Forbidden', '200 OK']", second.stderr


def test_block_on_start_timeout_waits_for_the_collector_s_set_not_the_spool_s(
    receiver: Receiver,
) -> None:
    """A block made while no worker ran is not in the set the spool kept: with
    ``block_on_start_timeout``, the first request of the next worker waits for the
    collector's set (it returned at once, the spool's set counting as the first)."""
    old = {"id": "7", "type": "block_ip", "ip": "203.0.113.0/24", "expires_in": 600}
    receiver.block([old])
    _run_until_enforced_and_kept(receiver)
    receiver.block([old, {"id": "8", "type": "block_ip", "ip": "198.51.100.0/24"}])
    second = _first_requests(
        receiver, ("198.51.100.1", "203.0.113.5", "192.0.2.1"), SQREEN_BLOCK_ON_START_TIMEOUT="10"
    )
    assert second.stdout.strip() == "['403 Forbidden', '403 Forbidden', '200 OK']", second.stderr


def test_a_process_that_did_nothing_says_nothing_at_exit(receiver: Receiver) -> None:
    """A process that tracked nothing and never started sqreen (``manage.py check``, a cron
    script with the Django app installed) sent its last heartbeat at exit all the same: each
    run showed on the Agents page as an SDK process. One that tracked still says its stats."""
    for code in ("import sqreen; sqreen.init()", "import sqreen; sqreen.track('cron.done')"):
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=_env(SQREEN_ENDPOINT=receiver.url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    assert [e["name"] for e in receiver.events] == ["cron.done"]
    assert len(receiver.heartbeats) >= 1
    assert all(h["stats"]["tracked"] == 1 for h in receiver.heartbeats), receiver.heartbeats


def test_sigterm_delivers_what_is_queued_and_still_dies_of_it(receiver: Receiver) -> None:
    proc = _start(
        """
        import sqreen, time
        sqreen.init(flush_interval=3600, heartbeat_interval=3600)
        for i in range(50):
            sqreen.track("before.sigterm", properties={"i": i})
        print("tracked", flush=True)
        while True:  # a server's loop (serve_forever polls every 0.5 s)
            time.sleep(0.5)
        """,
        SQREEN_ENDPOINT=receiver.url,
    )
    _wait_line(proc, "tracked")
    # CPython runs a handler when the main thread next runs bytecode: a SIGTERM that lands
    # between its last check and the start of a blocking call (here, as the main thread
    # hands the GIL to the flusher on its way into sleep) waits for that call to return.
    # One sleep(60) let that race be lost about once in 30 runs; a loop is what servers do.
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM
    assert len(receiver.wait_for(50, name="before.sigterm")) == 50
    assert receiver.heartbeats and receiver.heartbeats[-1]["stats"]["sent"] >= 50  # the last one


def test_a_multiprocessing_worker_ending_in_os_exit_delivers(receiver: Receiver) -> None:
    code = """
        import multiprocessing, sqreen
        def worker():
            sqreen.init(flush_interval=3600)
            for i in range(10):
                sqreen.track("in.worker", properties={"i": i})
        if __name__ == "__main__":
            p = multiprocessing.get_context("fork").Process(target=worker)
            p.start(); p.join()
            print(p.exitcode)
        """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=_env(SQREEN_ENDPOINT=receiver.url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == "0", proc.stderr
    assert len(receiver.wait_for(10, name="in.worker")) == 10


def test_the_spool_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sqreen._spool.MAX_SPOOL_BYTES", 10_000)
    spool = Spool(tmp_path, "p")
    for _ in range(20):
        spool.write([b"x" * 990])
    assert sum(p.stat().st_size for p in tmp_path.glob("*.batch")) <= 10_000
    assert spool.dropped == 10
    assert sqreen is not None
