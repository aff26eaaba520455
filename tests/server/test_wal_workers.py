"""Two processes ingesting into one SQLite file (`sqreen serve --workers 2`) keep its WAL
bounded: each checkpoint ran while the other process wrote, so the WAL was never started
again and grew without end (3 GB in 35 s of two workers' ingest over HTTP, measured)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sqreen._wire import parse_event
from sqreen.server.storage import open_storage, sqlite
from sqreen.server.storage._wal import WalRestarts

from .conftest import wire_event

LIMIT = 256 * 1024
BATCHES = 300
EVENTS = 20

#: One worker's ingest: batches of events from many users (their index entries land at
#: scattered places, as a real app's do), the WAL's limit made small; it prints the largest
#: size the WAL had after any of its commits.
WRITER = """
import os
import sys
from sqreen._wire import parse_event
from sqreen.server.storage import open_storage, sqlite
from tests.server.conftest import wire_event

sqlite.WAL_LIMIT = {limit}
storage = open_storage(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
largest = 0
for n in range({batches}):
    batch = [
        wire_event(
            id=f"w{{sys.argv[2]}}-{{n}}-{{i}}",
            user={{"username": f"user-{{sys.argv[2]}}-{{(n * 7919 + i * 104729) % 50000}}"}},
            properties={{"pad": "x" * 100}},
        )
        for i in range({events})
    ]
    storage.insert_events([parse_event(e) for e in batch])
    largest = max(largest, os.path.getsize(sys.argv[1] + "-wal"))
storage.close()
print(largest, flush=True)
"""


def wal_size(db: Path) -> int:
    try:
        return os.path.getsize(f"{db}-wal")
    except FileNotFoundError:
        return 0


def test_two_writing_processes_keep_the_wal_bounded(tmp_path: Path) -> None:
    db = tmp_path / "workers.db"
    open_storage(str(db)).close()
    code = WRITER.format(limit=LIMIT, batches=BATCHES, events=EVENTS)
    root = Path(__file__).resolve().parents[2]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(db), str(n)],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    try:
        for writer in writers:  # both opened: they start together
            assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        outputs = [writer.communicate(timeout=120)[0] for writer in writers]
        assert [writer.returncode for writer in writers] == [0, 0]
    finally:
        for writer in writers:
            writer.kill()
            writer.communicate()  # closes its pipes
    largest = max(int(output) for output in outputs)
    storage = open_storage(str(db))
    try:
        (stored,) = storage._read("SELECT count(*) FROM events")[0]
    finally:
        storage.close()
    assert stored == 2 * BATCHES * EVENTS
    # A restart is tried at a process's every 8th commit once past the limit: the WAL passes
    # it by what the commits in between wrote (12-13 MB here), not by what the whole ingest
    # wrote (175 MB when it was never started again).
    assert largest < 40 * 1024 * 1024, f"the WAL reached {largest} bytes (limit {LIMIT})"


def test_a_restart_is_forced_past_the_limit_of_frames_since_the_last_one() -> None:
    restarts = WalRestarts()
    assert not restarts.due((0, 100, 100), 1000, 150_000)  # 100 frames of 1000 bytes
    assert restarts.due((0, 200, 200), 1000, 150_000)
    assert restarts.due((0, 200, 120), 1000, 150_000)  # the others' frames not copied yet
    restarts.tried((0, 210, 210))
    assert restarts.due((0, 160, 160), 1000, 150_000)  # past it again: forced again


def test_a_reader_in_the_way_doubles_the_wait_until_a_checkpoint_copies_everything() -> None:
    restarts = WalRestarts()
    assert restarts.due((0, 200, 50), 1000, 150_000)
    restarts.tried((1, 220, 50))  # a reader kept it from ending: wait until it doubled
    assert not restarts.due((0, 400, 50), 1000, 150_000)
    assert restarts.due((0, 401, 50), 1000, 150_000)
    restarts.tried(None)  # locked past its wait: 802 now
    assert not restarts.due((0, 800, 50), 1000, 150_000)
    # Another process's checkpoint was running: no news of the reader, who is still there.
    assert not restarts.due((1, -1, -1), 1000, 150_000)
    assert not restarts.due((0, 800, 50), 1000, 150_000)
    # A checkpoint copied every frame: the reader has gone, the next try at once.
    assert restarts.due((0, 810, 810), 1000, 150_000)
    restarts.tried((1, -1, -1))  # another process's checkpoint was running: no doubling
    assert restarts.due((0, 820, 300), 1000, 150_000)
    restarts.tried((0, 830, 830))
    assert restarts.due((0, 160, 100), 1000, 150_000)


def test_a_held_reader_costs_a_few_forced_tries_and_the_wal_is_cut_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "WAL_LIMIT", 64 * 1024)
    db = str(tmp_path / "held.db")
    storage = open_storage(db)
    tries: list[str] = []
    alone = storage._checkpoint_alone  # type: ignore[attr-defined]

    def counted(wait: float, mode: str) -> tuple[int, int, int] | None:
        tries.append(mode)
        return alone(wait, mode)  # type: ignore[no-any-return]

    monkeypatch.setattr(storage, "_checkpoint_alone", counted)

    def store(batches: int, start: int) -> None:
        for n in range(start, start + batches):
            batch = [
                wire_event(id=f"held-{n}-{i}", user={"username": f"user-{(n * 31 + i) % 997}"})
                for i in range(50)
            ]
            storage.insert_events([parse_event(e) for e in batch])

    reader = sqlite3.connect(db, isolation_level=None)
    try:
        store(8, 0)  # the WAL exists
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchall()  # holds the WAL from here
        store(160, 8)  # 20 checkpoints, the WAL growing past the limit from the first
        held = len(tries)
        assert 2 <= held <= 8, tries  # doubling: not one try a checkpoint
        grown = wal_size(Path(db))
        assert grown > 64 * 64 * 1024
        reader.execute("COMMIT")
        store(24, 168)
        # Cut back once the reader let go: what the commits since the restart wrote.
        assert wal_size(Path(db)) < grown / 8
        assert storage.count_events() == 192 * 50
    finally:
        reader.close()
        storage.close()


def test_a_failing_checkpoint_never_fails_the_batch_it_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    storage = open_storage(str(tmp_path / "fault.db"))
    monkeypatch.setattr(storage._restarts, "due", lambda passive, frame, limit: True)  # type: ignore[attr-defined]

    def out_of_files(wait: float, mode: str) -> None:
        raise RuntimeError("cannot open the SQLite database: unable to open database file")

    monkeypatch.setattr(storage, "_checkpoint_alone", out_of_files)
    try:
        with caplog.at_level("WARNING", logger="sqreen.server"):
            for n in range(sqlite.CHECKPOINT_EVERY):
                result = storage.insert_events([parse_event(wire_event(id=f"fault-{n}"))])
                assert result.stored == 1
        assert "WAL checkpoint failed" in caplog.text
        assert storage.count_events() == sqlite.CHECKPOINT_EVERY
    finally:
        storage.close()
