"""Playbooks loaded while SDKs hold the action set: the event names they must send at once
reach them within about a second, though no block changed.

The names travel with the action set, which an SDK is sent only when its version moved:
before playbooks took a version of their own, an SDK that held the set (from the collector
before a restart, or its spool) kept watching nothing, and a brute force went on for a
whole flush interval (5 s) a batch before any playbook saw it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sqreen
from sqreen.server.playbooks import TEMPLATES
from sqreen.server.storage import EventFilter, open_storage

from .conftest import ServeProcess, add_key, free_port, wait_for

#: A playbook that only alerts: SDKs send what it reads on their interval, as before.
ALERT_ONLY = """
[[playbook]]
id = "watch-nothing"
events = ["auth.login.failure"]
group_by = "ip"
threshold = 50
window = "5m"
action = "alert"
"""


def stored(db: str, name: str) -> int:
    storage = open_storage(db)
    try:
        return len(storage.query_events(EventFilter(name=name), limit=100))
    finally:
        storage.close()


@pytest.fixture
def sdk_reset() -> Iterator[None]:
    yield
    sqreen.shutdown()


@pytest.mark.parametrize("how", ["restart", "sighup", "edit"])
def test_sdks_holding_the_set_learn_what_new_playbooks_watch(
    tmp_path: Path, serve: Callable[..., ServeProcess], sdk_reset: None, how: str
) -> None:
    db = str(tmp_path / "sqreen.db")
    token = add_key(db)
    port = free_port()
    file = tmp_path / "playbooks.toml"
    file.write_text(ALERT_ONLY)
    server = serve(db, port, "--playbooks", str(file))
    client = sqreen.init(
        endpoint=server.url, token=token, spool=str(tmp_path / "spool"), app_name="watch"
    )
    sqreen.track("hello")
    assert client.flush(10)  # it holds the set now, watching nothing
    assert client.queue.watched == frozenset()

    if how == "restart":  # as a user turning playbooks on: the collector started again
        server.stop()
        file.write_text(TEMPLATES)
        server = serve(db, port, "--playbooks", str(file))
    else:
        before = file.stat().st_mtime_ns
        file.write_text(TEMPLATES)
        # The file's stamp moved whatever the clock's grain (its size differs too).
        os.utime(file, ns=(before + 2 * 10**9, before + 2 * 10**9))
        if how == "sighup":
            assert server.proc is not None
            server.proc.send_signal(signal.SIGHUP)
    changed = time.monotonic()
    wait_for(lambda: "auth.login.failure" in client.queue.watched, timeout=10)
    learned = time.monotonic() - changed
    # Within about a second of the reload (the long-poll's); after a restart, once the
    # SDK's poll finds the collector again (its retry after a refused connection).
    assert learned < (4.0 if how == "restart" else 2.5), learned

    # And so a login failure leaves at once, not after the 5 s interval.
    tracked = time.monotonic()
    sqreen.track("auth.login.failure", user_identifiers={"username": "alice"})
    wait_for(lambda: stored(db, "auth.login.failure") == 1, timeout=10)
    assert time.monotonic() - tracked < 2.0


def test_a_collector_without_the_playbooks_of_its_database_says_so(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """Another collector of the database runs playbooks (the names it watches are recorded
    there): this one, started without ``--playbooks``, counts what it stores nowhere (a
    brute force through it was never blocked), and nothing said so."""
    db = str(tmp_path / "sqreen.db")
    add_key(db)
    storage = open_storage(db)
    try:
        storage.note_watched(["auth.login.failure", "auth.signup"])
    finally:
        storage.close()
    log = tmp_path / "serve.log"
    serve(db, None, log=log)
    wait_for(lambda: "no --playbooks here" in log.read_text())
    assert (
        "no --playbooks here, but a collector of this database runs playbooks (they watch "
        "auth.login.failure, auth.signup)" in log.read_text()
    )
