"""``sqreen serve`` and the signals an operator sends it, on real processes: SIGTERM answers
the action long-polls it holds at once (a clean, quick stop, no task cut), and SIGHUP or an
edit of the playbook file reloads the playbooks at once, in every worker, saying so."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from sqreen.server._cli_serve import GRACEFUL_SHUTDOWN
from sqreen.server.playbooks import TEMPLATES, PlaybookError, load_playbooks

from .conftest import SQREEN, ServeProcess, action_version, add_key, wait_for


class Polls:
    """Action long-polls of one key (the version served, 30 s), each in a thread: those held, and
    those refused at once (429) by a process already holding one (--max-polls-per-key 1)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.version = action_version(url, token)  # the set's, as served (not 0)
        self.threads: list[threading.Thread] = []
        #: (when answered, status, body), in the order answered.
        self.answers: list[tuple[float, int, Any]] = []

    def start(self) -> None:
        sent = threading.Event()

        def poll() -> None:
            hooks = {"request": [lambda request: sent.set()]}
            with httpx.Client(headers=self.headers, timeout=60, event_hooks=hooks) as client:
                params = {"version": self.version, "wait": 30}
                reply = client.get(self.url + "/v1/actions", params=params)
            self.answers.append((time.monotonic(), reply.status_code, reply.json()))

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        self.threads.append(thread)
        wait_for(sent.is_set)

    def probe(self) -> bool:
        """Whether the process this probe reaches holds a poll of the key already."""
        params = {"version": self.version, "wait": 1}
        reply = httpx.get(self.url + "/v1/actions", params=params, headers=self.headers)
        return reply.status_code == 429

    def held(self) -> Polls:
        """Once a poll is held: a poll started, then a probe, until a probe is refused (with
        --workers N the probes may reach another process than the polls for a while; each
        round's poll fills a process's slot or is refused at once)."""
        deadline = time.monotonic() + 60
        while True:
            self.start()
            if self.probe():
                return self
            assert time.monotonic() < deadline, "no long-poll held"

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_answers_the_held_long_polls_and_stops_cleanly(
    tmp_path: Path, serve: Callable[..., ServeProcess], workers: str
) -> None:
    db = str(tmp_path / "sqreen.db")
    token = add_key(db)
    log = tmp_path / "serve.log"
    server = serve(db, None, "--workers", workers, "--max-polls-per-key", "1", log=log)
    assert server.proc is not None
    polls = Polls(server.url, token).held()
    stopped = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    polls.join()
    late = [(at - stopped, status, body) for at, status, body in polls.answers if at > stopped]
    assert late, "no poll was held"
    for after, status, body in late:
        assert (status, body) == (200, {"actions": {"version": polls.version, "unchanged": True}})
        # Before uvicorn's graceful shutdown gives up on the request and cancels it.
        assert after < GRACEFUL_SHUTDOWN, after
    assert server.proc.wait(30) == 0
    text = log.read_text()
    assert "ERROR" not in text and "Cancel" not in text, text


def _with_playbooks(
    tmp_path: Path, serve: Callable[..., ServeProcess], workers: int, level: str
) -> tuple[ServeProcess, str, Path, Path]:
    """``serve --workers N --playbooks`` (the templates) logging at ``level`` to a file: the
    server, an ingest token, the playbook file and the log."""
    db = str(tmp_path / "sqreen.db")
    token = add_key(db)
    file = tmp_path / "playbooks.toml"
    file.write_text(TEMPLATES)
    log = tmp_path / "serve.log"
    args = ("--workers", str(workers), "--playbooks", str(file), "--log-level", level)
    return serve(db, None, *args, log=log), token, file, log


@pytest.mark.parametrize("workers", [1, 2])
def test_a_reload_is_done_and_said_at_once_in_every_worker(
    tmp_path: Path, serve: Callable[..., ServeProcess], workers: int
) -> None:
    """No event arrives: a bad edit is said within a second or so, in one line naming the
    file, its line and the reason, as at start, and the rules in force stay; SIGHUP re-reads
    at once, changed or not; a good file is loaded and said (by the supervisor, once, with
    --workers N: every worker re-reads it, at DEBUG)."""
    server, token, file, log = _with_playbooks(tmp_path, serve, workers, "debug")
    assert server.proc is not None
    headers = {"Authorization": f"Bearer {token}"}

    def lines(what: str, level: str = "") -> list[str]:
        return [line for line in log.read_text().splitlines() if what in line and level in line]

    def watch() -> set[str]:
        """The event names SDKs are told to send at once, as a few replies say them."""
        replies = [httpx.get(server.url + "/v1/actions", headers=headers) for _ in range(6)]
        return {" ".join(r.json()["actions"]["watch"]) for r in replies}

    before = watch()
    assert before == {"auth.login.failure auth.signup"}
    # Said at start too, once: what was loaded, and what SDKs will send at once.
    assert lines("playbooks loaded from") == [
        f"6 playbooks loaded from {file} (4 blocking; SDKs send at once: auth.login.failure, "
        "auth.signup)"
    ]

    # A bad edit, looked at within a second, said in one line as at start.
    file.write_text(TEMPLATES + "\ngarbage = [\n")
    with pytest.raises(PlaybookError) as refused:
        load_playbooks(file)
    assert f"{file}:" in str(refused.value)
    wait_for(lambda: bool(lines("playbooks not reloaded")))
    (said,) = lines("playbooks not reloaded")
    assert said.startswith("ERROR:") and f"not reloaded: {refused.value}; the 6 in force" in said
    assert "Traceback" not in log.read_text()
    assert watch() == before

    # SIGHUP: read again at once, unchanged as it is.
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(lines("playbooks not reloaded")) == 2)

    # A good file: loaded, said once; each worker re-reads it (said at DEBUG, supervised).
    one = TEMPLATES.split("[[playbook]]")
    file.write_text(one[0] + "[[playbook]]" + one[-1])  # signup-abuse alone
    loaded = f"sqreen: 1 playbook loaded from {file}"
    wait_for(lambda: watch() == {"auth.signup"})
    wait_for(lambda: len(lines(loaded, "DEBUG")) == (workers if workers > 1 else 0))
    assert len(lines(loaded, "INFO")) == 1

    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(lines(loaded, "INFO")) == 2)
    wait_for(lambda: len(lines(loaded, "DEBUG")) == (2 * workers if workers > 1 else 0))
    assert len(lines("playbooks not reloaded")) == 2
    assert server.proc.poll() is None


@pytest.mark.skipif(not shutil.which("nohup"), reason="no nohup")
def test_sighup_reloads_a_collector_started_under_nohup(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """``nohup`` ignores SIGHUP, and the handler was only set over the default: ``kill -HUP``
    did nothing, said nowhere (``--workers N`` reloaded: its supervisor's handler)."""
    db = str(tmp_path / "sqreen.db")
    add_key(db)
    file = tmp_path / "playbooks.toml"
    file.write_text(TEMPLATES)
    log = tmp_path / "serve.log"
    server = serve(
        db, None, "--playbooks", str(file), "--log-level", "info", log=log,
        command=["nohup", *SQREEN],
    )  # fmt: skip
    assert server.proc is not None

    def loaded() -> int:
        return log.read_text().count(f"6 playbooks loaded from {file}")

    wait_for(lambda: loaded() == 1)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: loaded() == 2)
    assert server.proc.poll() is None


def test_sighup_without_playbooks_is_said_and_the_collector_goes_on(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """``systemctl reload`` and logrotate send SIGHUP: the default collector (one process, no
    --playbooks) ended at once with status 129, said nowhere."""
    db = str(tmp_path / "sqreen.db")
    add_key(db)
    log = tmp_path / "serve.log"
    server = serve(db, None, "--log-level", "info", log=log)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: no --playbooks to re-read" in log.read_text())
    assert server.proc.poll() is None
    assert httpx.get(server.url + "/healthz").status_code == 200


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("when", ["starting", "serving"])
def test_the_workers_stop_when_their_supervisor_is_killed(
    tmp_path: Path, serve: Callable[..., ServeProcess], when: str
) -> None:
    """``kill -9`` of ``sqreen serve --workers 2`` (or an OOM kill) left its workers serving,
    orphans holding the port, SQLite's serve lock and the playbooks of before; killed while
    they start, too (a worker orphaned before it looked at its parent)."""
    db = str(tmp_path / "sqreen.db")
    add_key(db)
    server = serve(db, None, "--workers", "2")
    assert server.proc is not None
    supervisor = server.proc.pid
    wait_for(lambda: len(_children(supervisor)) >= 3)  # the resource tracker, two workers
    if when == "serving":
        wait_for(lambda: httpx.get(server.url + "/livez").status_code == 200)
    workers = _children(supervisor)
    server.proc.kill()
    server.proc.wait(10)

    def gone(pid: int) -> bool:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return True
        return state[0] == "Z"

    wait_for(lambda: all(gone(pid) for pid in workers), timeout=20)  # (their stop: 1-3 s)
    with socket.socket() as again:  # the port is free for a new collector
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", server.port))


def test_a_worker_started_while_the_file_does_not_hold_keeps_the_rules_in_force(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """`--workers 2`: a worker replaced (killed, or started late) while a bad edit is saved
    read the file, refused it, and died at start with a traceback, again at each
    replacement, until the file was fixed. It now starts with the set the supervisor holds
    in force, says so in one line, and follows the next good edit as its siblings do."""
    server, token, file, log = _with_playbooks(tmp_path, serve, 2, "info")
    assert server.proc is not None
    headers = {"Authorization": f"Bearer {token}"}

    def said(text: str) -> int:
        return log.read_text(errors="replace").count(text)

    def watch() -> set[str]:
        replies = [httpx.get(server.url + "/v1/actions", headers=headers) for _ in range(8)]
        return {" ".join(r.json()["actions"]["watch"]) for r in replies}

    wait_for(lambda: said("Application startup complete") == 2)
    file.write_text(TEMPLATES + "\ngarbage = [\n")
    wait_for(lambda: said("playbooks not reloaded") == 1)
    workers = [p for p in _children(server.proc.pid) if b"resource_tracker" not in
               (Path("/proc") / str(p) / "cmdline").read_bytes()]  # fmt: skip
    os.kill(workers[0], signal.SIGKILL)
    wait_for(lambda: said("Application startup complete") == 3)  # its replacement serves
    assert said("playbooks not loaded at this worker's start") == 1
    assert "Traceback" not in log.read_text(errors="replace")
    assert watch() == {"auth.login.failure auth.signup"}  # every worker: the rules in force
    # The next good edit reaches the replacement too (the copy is updated before SIGHUP).
    file.write_text(TEMPLATES.replace('"auth.signup"', '"auth.password.reset"'))
    wait_for(lambda: watch() == {"auth.login.failure auth.password.reset"})
