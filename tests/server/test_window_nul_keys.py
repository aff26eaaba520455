"""A NUL character in a group key (a custom playbook's ``user.<id>`` or ``properties.<x>``,
which a client controls) must not cost the other keys of its batch their playbooks; the key
is counted as its events are stored, the NUL as U+FFFD, on both databases.

On PostgreSQL the windows' transaction sends the key as text, which PostgreSQL refuses
with a NUL in it (psycopg.DataError before arrays, CharacterNotInRepertoire with them): the
transaction fails, the hook is logged as failed, and no key of the batch is counted or
alerted on (here "good", three failures of its own, gets no alert). SQLite stores the
key as it is and alerts on both. Events are stored either way (``clean`` replaces NUL in
indexed event columns, but the playbooks read the wire events, not the cleaned rows): now
the playbooks' readers clean what they read the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sqreen.server.pipeline import IngestPipeline
from sqreen.server.playbooks import PlaybookRunner, PlaybookSource
from sqreen.server.storage import open_storage

from .conftest import Clock, envelope, wire_event

PLAYBOOK = """\
[[playbook]]
id = "by-uid"
events = ["auth.login.failure"]
group_by = "{group}"
threshold = 3
window = "5m"
action = "alert"
"""


@pytest.mark.parametrize("group", ["user.uid", "properties.reason"])
def test_a_nul_in_one_group_key_leaves_the_other_keys_of_the_batch_counted(
    db_url: str, tmp_path: Path, clock: Clock, group: str
) -> None:
    path = tmp_path / "playbooks.toml"
    path.write_text(PLAYBOOK.format(group=group))
    storage = open_storage(db_url, clock=clock)
    try:
        pipeline = IngestPipeline(storage, hooks=[PlaybookRunner(storage, PlaybookSource(path))])

        def failure(value: str) -> dict[str, object]:
            return wire_event(user={"uid": value}, properties={"reason": value})

        events = [failure("good") for _ in range(3)] + [failure("a\x00b") for _ in range(3)]
        pipeline(json.dumps(envelope(events)).encode())
        keys = {a.group_key for a in storage.list_alerts()}
        assert keys == {"good", "a\ufffdb"}, keys
    finally:
        storage.close()


DISTINCT = """\
[[playbook]]
id = "many-reasons"
events = ["auth.login.failure"]
group_by = "ip"
distinct = "properties.reason"
threshold = 3
window = "5m"
action = "block_ip"
duration = "1h"
"""


def test_a_nul_in_distinct_values_counts_them_and_blocks(
    db_url: str, tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "playbooks.toml"
    path.write_text(DISTINCT)
    storage = open_storage(db_url, clock=clock)
    try:
        pipeline = IngestPipeline(storage, hooks=[PlaybookRunner(storage, PlaybookSource(path))])
        events = [wire_event(properties={"reason": r}) for r in ("a\x00", "b\x00", "c\x00")]
        pipeline(json.dumps(envelope(events)).encode())
        (alert,) = storage.list_alerts()
        assert (alert.group_key, alert.total) == ("203.0.113.7", 3)
        assert [b.ip for b in storage.list_blocks()] == ["203.0.113.7/32"]
    finally:
        storage.close()
