"""User identifiers are indexed folded, as blocks and playbooks compare them (schema 21): a
user filter in any spelling finds every spelling the playbook counted as one user, a group
by an identifier counts them as one, and the events keep the spelling they were sent with.
Databases stored before are folded by the upgrade, on both back ends."""

from __future__ import annotations

from typing import Any

import pytest

from sqreen.server.storage import EventFilter, Storage, open_storage
from sqreen.server.storage.postgres import PostgresStorage
from sqreen.server.storage.sqlite import SQLiteStorage

from .conftest import wire_event

#: One user in five spellings, another user, and the first's spelling under another key.
SENT = [
    {"email": "Bob@Example.com"},
    {"email": " bob@example.com "},
    {"email": "BOB@EXAMPLE.COM"},
    {"email": "\uff42\uff4f\uff42@example.com"},  # fullwidth letters, as NFKC reads them
    {"email": "bob@example.com", "uid": "B-7"},
    {"email": "alice@example.com"},
    {"uid": "Bob@Example.com"},
]
BOB = [0, 1, 2, 3, 4]


def store(storage: Storage) -> list[str]:
    events = [wire_event(user=user) for user in SENT]
    storage.insert_events(events)  # type: ignore[arg-type]
    return [e["id"] for e in events]


def found(storage: Storage, *users: tuple[str, str]) -> list[str]:
    return sorted(e.id for e in storage.query_events(EventFilter(users=users), limit=100))


def test_a_user_filter_in_any_spelling_finds_every_spelling(storage: Storage) -> None:
    ids = store(storage)
    bob = sorted(ids[i] for i in BOB)
    for spelling in (
        "bob@example.com",
        "Bob@Example.com",
        "  BOB@example.COM",
        "\uff22\uff2f\uff22@example.com",  # fullwidth capitals
    ):
        assert found(storage, ("email", spelling)) == bob, spelling
        assert storage.count_events(EventFilter(users=(("email", spelling),))) == len(bob)
    assert found(storage, ("email", "bob@example.com"), ("uid", "b-7")) == [ids[4]]
    assert found(storage, ("uid", "bob@example.com")) == [ids[6]]  # another key: another identifier
    assert found(storage, ("email", "bob@example.org")) == []
    # One group, under the folded spelling (the one a playbook's alert names).
    groups = dict(storage.count_by("user.email", EventFilter(), 10, newest=100))
    assert groups == {"bob@example.com": 5, "alice@example.com": 1}
    # Each event keeps what it was sent with.
    stored = {e.id: e.user for e in storage.query_events(limit=100)}
    assert [stored[i] for i in ids] == SENT


def _older(current: Any, db: str) -> Any:
    """A storage of schema 20 on ``db``, as the build before wrote it: identifiers indexed
    as sent (its rows written back to their spelling after an insert by this code)."""
    schema_20 = type("Schema20", (current,), {"MIGRATIONS": current.MIGRATIONS[:20]})
    return schema_20(db)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_an_older_database_is_folded_by_the_upgrade(
    backend: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    if backend == "sqlite":
        current: Any = SQLiteStorage
        db = str(tmp_path / "old.db")
    else:
        current = PostgresStorage
        db = str(request.getfixturevalue("postgres_db"))
    old = _older(current, db)
    try:
        ids = store(old)
        with old._write() as cur:
            for seq, event in enumerate(SENT, start=1):
                for key, value in event.items():
                    cur.execute(
                        "UPDATE event_users SET value = ? WHERE seq = ? AND key = ?",
                        (value, seq, key),
                    )
        # Not folded yet: a filter finds the row already in the folded spelling alone.
        assert found(old, ("email", "Bob@Example.com")) == [ids[4]]
    finally:
        old.close()
    upgraded = open_storage(db)
    try:
        assert found(upgraded, ("email", "Bob@Example.com")) == sorted(ids[i] for i in BOB)
        assert found(upgraded, ("uid", "b-7")) == [ids[4]]
        with upgraded._write() as cur:  # type: ignore[attr-defined]
            values = {v for (v,) in cur.execute("SELECT value FROM event_users").fetchall()}
        assert values == {"bob@example.com", "b-7", "alice@example.com"}
        stored = {e.id: e.user for e in upgraded.query_events(limit=100)}
        assert [stored[i] for i in ids] == SENT
    finally:
        upgraded.close()
