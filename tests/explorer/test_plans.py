"""The query plans behind the events page (and the reads of the alerts, playbooks and blocks
pages, of a user's traits and of the threat score's recent blocks and alerts) use indexes, on
both back ends.

Each single filter's page (list, histogram sample, group counts) is loaded on a small
database while every statement is recorded, then each statement is explained: no full scan of
a table, and the filter's own index used. SQLite plans without statistics, so its plans here
are its plans at a million events; PostgreSQL is asked with sequential scans discouraged
(``enable_seqscan = off``), which shows that an index path exists. The timings at scale are
``bench/bench_explorer.py``'s job.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sqreen.server.explorer._events import load
from sqreen.server.explorer._query import parse_query
from sqreen.server.storage import EventFilter, Storage, open_storage

from .conftest import wire_event

NOW = datetime.now(UTC)
#: A filter; the index every statement must use (None: a walk down the newest events by
#: seq, stopped by a LIMIT); and the side table some statement must look up by primary key.
FILTERS: dict[str, tuple[list[tuple[str, str]], str | None, str | None]] = {
    "newest": ([], None, None),
    "name": ([("name", "auth.login.failure")], "events_name", None),
    # SQLite's by run of seqs first (event_users_bkv), PostgreSQL's by (key, value, seq).
    "user": ([("user", "uid=3")], "event_users_(bkv|kv)", None),
    "ip": ([("ip", "203.0.113.7")], "events_ip", None),
    "property": ([("prop", "reason=bad_password")], "event_props_kv", None),
    "time range": ([("since", "9d"), ("until", "7d")], "events_ts", None),
    "group by ip": ([("group", "ip")], None, None),
    "group by user": ([("group", "user:uid")], None, "event_users"),
    "group by property": (
        [("name", "auth.login.failure"), ("group", "prop:reason")],
        "events_name",
        "event_props",
    ),
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def filled(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    url = str(tmp_path / "plans.db")
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_db")
    storage = open_storage(url)
    events = [
        wire_event(
            timestamp=(NOW - timedelta(hours=i)).isoformat().replace("+00:00", "Z"),
            user={"uid": str(i % 7)},
        )
        for i in range(400)
    ]
    storage.insert_events(events)  # type: ignore[arg-type]
    yield storage
    storage.close()


def recorded(storage: Storage, read: Any) -> list[tuple[str, list[Any]]]:
    """The SQL ``read(storage)`` runs."""
    seen: list[tuple[str, list[Any]]] = []
    original = storage._read  # type: ignore[attr-defined]

    def recording(sql: str, params: Any = ()) -> Any:
        seen.append((sql, list(params)))
        return original(sql, params)

    storage._read = recording  # type: ignore[attr-defined]
    try:
        read(storage)
    finally:
        del storage._read  # type: ignore[attr-defined]
    return seen


def statements(storage: Storage, args: list[tuple[str, str]]) -> list[tuple[str, list[Any]]]:
    """The SQL the events page runs for ``args``."""

    def page(s: Storage) -> None:
        query, errors = parse_query(args, NOW)
        assert not errors
        load(s, query, "/explorer/events", NOW)

    seen = recorded(storage, page)
    return [(sql, p) for sql, p in seen if "ORDER BY ts LIMIT 1" not in sql]  # cost probes


def plan(storage: Storage, sql: str, params: list[Any]) -> list[str]:
    if hasattr(storage, "_connect"):  # SQLite
        conn = storage._connect()
        try:
            return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        finally:
            conn.close()
    with storage._connection() as conn:  # type: ignore[attr-defined]
        conn.execute("SET enable_seqscan = off")
        try:
            rows = conn.execute("EXPLAIN " + sql.replace("?", "%s"), params).fetchall()
        finally:
            conn.execute("RESET enable_seqscan")
    return [row[0] for row in rows]


def full_scans(lines: list[str], sql: str = "") -> list[str]:
    """Plan lines reading a whole table (not a subquery's rows, not an index)."""
    out = [line for line in lines if "Seq Scan" in line]
    # (event_user_buckets b: SQLite's users' runs, a row a run of 4 096 events, walked from
    # the newest; ``blocks b`` is another b.)
    skipped = ("m", "x", "s", "b") if "event_user_buckets b" in sql else ("m", "x", "s")
    for line in lines:
        found = re.fullmatch(r"SCAN (\w+)", line.strip())
        if found and f"CO-ROUTINE {found[1]}" not in lines and found[1] not in skipped:
            out.append(line)
    return out


@pytest.mark.parametrize("label", list(FILTERS))
def test_each_filter_reads_through_an_index(filled: Storage, label: str) -> None:
    args, index, lookup = FILTERS[label]
    found = statements(filled, args)
    assert len(found) >= 2  # the page, the times of the sample (its span and histogram)
    plans = []
    for sql, params in found:
        lines = plan(filled, sql, params)
        text = "\n".join(lines)
        plans.append(text)
        if index is None:
            assert "LIMIT" in sql, text  # bounded
        else:
            assert not full_scans(lines, sql), f"{label}: full scan in\n{sql}\n{text}"
            assert re.search(index, text), f"{label}: {index} unused in\n{sql}\n{text}"
    if lookup is not None:
        # SQLite: "SEARCH g USING PRIMARY KEY (seq=? AND key=?)"; PostgreSQL: "<table>_pkey".
        by_key = re.compile(rf"{lookup}_pkey|SEARCH g USING PRIMARY KEY \(seq=\? AND key=\?\)")
        assert any(by_key.search(text) for text in plans), "\n\n".join(plans)


#: The reads of the alerts, playbooks and blocks pages, of a user's traits and of the threat
#: score; the index each must use.
READS: dict[str, tuple[Any, str]] = {
    "an alert's events": (lambda s: s.events_by_seq([3, 5, 8]), r"events_pkey|PRIMARY KEY"),
    "a playbook's alerts": (
        lambda s: s.list_alerts(playbook="brute-force-ip", before_id=10),
        "alerts_playbook",
    ),
    "an alert's block": (lambda s: s.blocks_by_id([1, 2]), r"blocks_pkey|PRIMARY KEY"),
    "a user's traits": (lambda s: s.get_user({"uid": "3"}), r"users_pkey|sqlite_autoindex_users"),
    "blocks' refusal events": (
        lambda s: s.count_by(
            "properties.block_id", EventFilter(name="security.blocked"), 10_000, newest=10_000
        ),
        "events_name",
    ),
    # The threat score's reads (every 5 s): the IP blocks and IP alerts alone, by time.
    "recent IP blocks": (
        lambda s: s.recent_ip_blocks(NOW - timedelta(days=7), 5000),
        "blocks_ip_made",
    ),
    "recent IP alerts": (
        lambda s: s.recent_alert_ips(NOW - timedelta(days=1), 5000),
        "alerts_ip_made",
    ),
}


@pytest.mark.parametrize("label", list(READS))
def test_the_alert_and_user_reads_use_their_indexes(filled: Storage, label: str) -> None:
    read, index = READS[label]
    found = recorded(filled, read)
    assert found
    for sql, params in found:
        lines = plan(filled, sql, params)
        text = "\n".join(lines)
        assert not full_scans(lines), f"{label}: full scan in\n{sql}\n{text}"
        assert re.search(index, text), f"{label}: {index} unused in\n{sql}\n{text}"


@pytest.mark.parametrize("since", [None, NOW - timedelta(days=7)])
def test_the_backtest_walks_the_time_index_without_a_sort(
    filled: Storage, since: datetime | None
) -> None:
    """The backtest's pages (events by time, then seq): seeks of ``events_ts``, whose entries
    are in that order, so that a page costs its own events, however many the range holds
    (pages of 10 here, of 2 000 in ranges of millions)."""
    filters = EventFilter(since=since)
    middle = NOW - timedelta(hours=100)
    found = recorded(filled, lambda s: s.scan_events_by_time(filters, after=(middle, 5), limit=10))
    found += recorded(filled, lambda s: s.scan_events_by_time(filters, limit=10))
    assert len(found) == 3  # the rest of a time's events, the later ones; a first page
    for sql, params in found:
        text = "\n".join(plan(filled, sql, params))
        assert not full_scans(text.splitlines()), f"full scan in\n{sql}\n{text}"
        assert "events_ts" in text, f"events_ts unused in\n{sql}\n{text}"
        assert not re.search(r"TEMP B-TREE|Sort", text), f"a sort in\n{sql}\n{text}"
