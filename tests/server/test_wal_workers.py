"""Two processes ingesting into one SQLite file (`sqreen serve --workers 2`) keep its WAL
bounded: each checkpoint ran while the other process wrote, so the WAL was never started
again and grew without end (3 GB in 35 s of two workers' ingest over HTTP, measured)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sqreen.server.storage import open_storage

LIMIT = 256 * 1024
BATCHES = 300
EVENTS = 20

#: One worker's ingest: batches of events from many users (their index entries land at
#: scattered places, as a real app's do), the WAL's limit made small.
WRITER = """
import sys
from sqreen._wire import parse_event
from sqreen.server.storage import open_storage, sqlite
from tests.server.conftest import wire_event

sqlite.WAL_LIMIT = {limit}
storage = open_storage(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
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
storage.close()
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
        largest = 0
        while any(writer.poll() is None for writer in writers):
            largest = max(largest, wal_size(db))
            time.sleep(0.005)
        assert [writer.returncode for writer in writers] == [0, 0]
    finally:
        for writer in writers:
            writer.kill()
            writer.communicate()  # closes its pipes
    largest = max(largest, wal_size(db))
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
