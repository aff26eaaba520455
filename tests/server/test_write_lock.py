"""SQLite's write lock, timed: every writer tells ``on_write_lock`` how long it waited for
the lock and held it (``sqreen_storage_write_lock_seconds``), whatever its transaction did.

Two storages on one file stand for two ``serve --workers`` processes: each opens its own
``flock`` description, so they queue for each other as processes do. ``/proc/locks`` says
when the second one is queued, so the test knows it waits without sleeping on a guess.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sqreen.server.storage import _write_lock, open_storage
from sqreen.server.storage._serve_lock import lock_name
from sqreen.server.storage.sqlite import SQLiteStorage
from tests.server.conftest import wait_for

HELD = 0.05  # how long the first writer keeps the lock once the second queues for it


def _open(path: Path) -> SQLiteStorage:
    storage = open_storage(str(path))
    assert isinstance(storage, SQLiteStorage)
    return storage


def _queued_on(lock_file: str, waiting: bool = True) -> bool:
    """Whether a process or description waits for the ``flock`` of ``lock_file`` (or, not
    ``waiting``, holds it)."""
    found = os.stat(lock_file)  # /proc/locks names a file as major:minor:inode
    where = f" {os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino} "
    with open("/proc/locks") as locks:
        return any(("->" in line) is waiting and where in line for line in locks)


class Clock:
    """The lock's ``perf_counter``, driven by the test: a microsecond a read (time moves on),
    and :meth:`advance` for the time the test says passed."""

    def __init__(self) -> None:
        self.now = 0.0
        self._guard = threading.Lock()

    def perf_counter(self) -> float:
        with self._guard:
            self.now += 1e-6
            return self.now

    def advance(self, seconds: float) -> None:
        with self._guard:
            self.now += seconds


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="Linux's /proc/locks")
def test_a_writer_queued_behind_another_reports_its_wait_and_the_other_its_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(
        _write_lock,
        "time",
        SimpleNamespace(perf_counter=clock.perf_counter, monotonic=time.monotonic),
    )
    first, second = _open(tmp_path / "a.db"), _open(tmp_path / "a.db")
    told: dict[str, list[tuple[float, float]]] = {"first": [], "second": []}
    first.on_write_lock = lambda waited, held: told["first"].append((waited, held))
    second.on_write_lock = lambda waited, held: told["second"].append((waited, held))
    done = threading.Event()
    try:
        with first._lock.held():
            writer = threading.Thread(target=lambda: (second.set_setting("k", "v"), done.set()))
            writer.start()
            wait_for(lambda: _queued_on(lock_name(str(tmp_path / "a.db"), "-writer.lock")))
            assert not done.is_set()
            clock.advance(HELD)  # the lock kept past the queueing
        writer.join(10)
        assert done.is_set()
        assert second.get_setting("k") == "v"
    finally:
        first.close()
        second.close()
    [(first_waited, first_held)] = told["first"]
    assert first_waited < HELD and first_held >= HELD
    # The second writer took its turn once, after waiting at least as long as the first
    # kept the lock once it queued (it may take turns again for its own checkpoints: none
    # for one setting).
    [(second_waited, second_held)] = told["second"]
    assert second_waited >= HELD
    assert 0 < second_held < second_waited


def test_a_failed_transaction_is_timed_too_and_no_observer_costs_nothing(tmp_path: Path) -> None:
    storage = _open(tmp_path / "b.db")
    told: list[tuple[float, float]] = []
    try:
        with pytest.raises(ZeroDivisionError), storage._transaction(1):
            1 / 0  # noqa: B018 (the failure inside the transaction)
        storage.on_write_lock = lambda waited, held: told.append((waited, held))
        with pytest.raises(ZeroDivisionError), storage._transaction(1):
            1 / 0  # noqa: B018
        assert len(told) == 1 and told[0][0] >= 0 and told[0][1] > 0
        storage.set_setting("k", "v")  # the lock is free again, and still timed
        assert len(told) == 2
    finally:
        storage.close()


def test_an_observer_that_fails_is_asked_again_said_once_and_the_write_stands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = _open(tmp_path / "c.db")
    calls: list[float] = []

    def broken(waited: float, held: float) -> None:
        calls.append(held)
        if len(calls) < 3:
            raise OSError("no space left for the metrics' file")

    storage.on_write_lock = broken
    try:
        storage.set_setting("k", "v")  # committed, and not an error for its caller
        storage.set_setting("k", "w")
        storage.set_setting("k", "x")  # the observer works again: still asked
        assert storage.get_setting("k") == "x"
    finally:
        storage.close()
    assert len(calls) == 3 and storage.on_write_lock is broken
    logged = [r.getMessage() for r in caplog.records if "observer" in r.getMessage()]
    assert logged == ["sqreen: the write lock's observer failed (said once a minute)"]


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="Linux's /proc/locks")
def test_a_truncate_checkpoint_holds_the_lock_so_a_writer_meanwhile_counts_a_wait(
    tmp_path: Path,
) -> None:
    """A TRUNCATE blocks writers while it waits for a reader: they queue for the lock, and
    say so as a wait (they counted a hold, spent polling SQLite's, before)."""
    path = str(tmp_path / "d.db")
    first, second = _open(tmp_path / "d.db"), _open(tmp_path / "d.db")
    told: list[tuple[float, float]] = []
    second.on_write_lock = lambda waited, held: told.append((waited, held))
    reader = sqlite3.connect(path)
    try:
        first.set_setting("before", "the reader's snapshot")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM settings").fetchone()
        first.set_setting("after", "the reader's snapshot")  # a frame the reader keeps
        truncating = threading.Thread(target=first._truncate_wal, args=(1.0,))
        truncating.start()
        wait_for(lambda: _queued_on(lock_name(path, "-writer.lock"), waiting=False))
        writer = threading.Thread(target=second.set_setting, args=("k", "v"))
        writer.start()
        wait_for(lambda: _queued_on(lock_name(path, "-writer.lock")))
        truncating.join(10)
        writer.join(10)
    finally:
        reader.close()
        first.close()
        second.close()
    [(waited, held)] = told
    assert waited > held
