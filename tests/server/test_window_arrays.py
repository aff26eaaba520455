"""PostgreSQL's windows' statements with keys and columns sent as arrays (one text, one
parameter a column): the same answers as the statements of a parameter a value, whatever
the keys hold, and a plan that reads each key's range of the primary key."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from sqreen.server.storage import Storage, open_storage
from sqreen.server.storage._pg_log import HITS
from sqreen.server.storage._playbooks import (
    MARK_COLUMNS,
    MARK_UPSERT,
    QUIET_COLUMNS,
    QUIET_UPSERT,
)
from sqreen.server.storage._window_reads import count_probes, quiet_times, read_marks
from sqreen.server.storage.postgres import _q

from .conftest import Clock

pytestmark = pytest.mark.postgres

NOW = 1_800_000_000_000_000
S = 1_000_000

#: Keys an event can make a group key of: what an array's text form must quote or escape,
#: or what a careless encoder breaks on.
HOSTILE_KEYS = [
    "",
    " ",
    "NULL",
    "null",
    '"',
    '""',
    "\\",
    "\\\\N",
    "{}",
    "{a,b}",
    "a,b",
    "(1,2)",
    "'; DROP TABLE window_hits; --",
    '{"email":"bob@example.com","uid":"42"}',
    "\x1f",
    "\t\n\r",
    "🙂",
    "\u202edlrow",
    "ǅ",
    "x" * 4096,
    "198.51.100.66",
    "2001:db8::/64",
]


@pytest.fixture
def pg(postgres_db: str, clock: Clock) -> Iterator[Storage]:
    s = open_storage(postgres_db, clock=clock)
    yield s
    s.close()


def _hits(keys: list[str], rng: random.Random) -> list[tuple[str, str, int, int, str | None]]:
    return [
        (
            stream,
            key,
            NOW - rng.randint(0, 3600) * S,
            n,
            None if rng.random() < 0.3 else rng.choice(HOSTILE_KEYS[:14]),
        )
        for n, (stream, key) in enumerate(
            (rng.choice(["s1", "s2"]), rng.choice(keys)) for _ in range(900)
        )
    ]


def test_counts_of_hostile_keys_are_those_of_the_statements_of_a_parameter_a_value(
    pg: Storage,
) -> None:
    rng = random.Random(3)
    hits = _hits(HOSTILE_KEYS, rng)
    probes = [
        (stream, key, NOW - window * S, 1, distinct)
        for stream in ("s1", "s2", "s3")
        for key in [*HOSTILE_KEYS, "never seen"]
        for window in (300, 3600, rng.randint(1, 3600))
        for distinct in (False, True)
    ]
    with pg._write() as cur:  # type: ignore[attr-defined]
        pg._insert_hits(cur, hits)  # type: ignore[attr-defined]
        stored = cur.execute(f"SELECT stream, key, ts, seq, value FROM {HITS}").fetchall()
        arrays = count_probes(cur, probes, True, HITS)
        values = count_probes(cur, probes, False, HITS)
    assert sorted(stored) == sorted(hits, key=lambda h: (h[0], h[1], h[2], h[3], h[4] or ""))
    assert arrays == values
    for stream, key, since, _, distinct in probes:
        mine = [h for h in hits if h[0] == stream and h[1] == key and h[2] >= since]
        want = len({h[4] for h in mine if h[4] is not None}) if distinct else len(mine)
        assert arrays[(stream, key, since, 1, distinct)] == want, (stream, key, since)


def test_quiet_times_and_marks_of_hostile_keys(pg: Storage) -> None:
    quiet = [("pb", key, NOW + n * S) for n, key in enumerate(HOSTILE_KEYS)]
    marks = [("pb", key, NOW - n * S, n) for n, key in enumerate(HOSTILE_KEYS)]
    tail = QUIET_UPSERT
    with pg._write() as cur:  # type: ignore[attr-defined]
        pg._insert(cur, "playbook_quiet", QUIET_COLUMNS, quiet, tail, 400)  # type: ignore[attr-defined]
        # Written again, later: the upsert's update, through the same arrays.
        later = [(p, k, until + S) for p, k, until in quiet]
        pg._insert(cur, "playbook_quiet", QUIET_COLUMNS, later, tail, 400)  # type: ignore[attr-defined]
        pg._insert(cur, "playbook_marks", MARK_COLUMNS, marks, " ON CONFLICT DO NOTHING", 400)  # type: ignore[attr-defined]
        asked = [*HOSTILE_KEYS, "absent"]
        for arrays in (True, False):
            assert quiet_times(cur, asked, NOW, arrays) == {(p, k): until for p, k, until in later}
            assert read_marks(cur, asked, arrays) == {(p, k): (ts, seq) for p, k, ts, seq in marks}


def test_a_column_of_only_nulls_and_no_rows_at_all(pg: Storage) -> None:
    hits = [("s", f"k{n}", NOW - n, n, None) for n in range(5)]
    with pg._write() as cur:  # type: ignore[attr-defined]
        pg._insert_hits(cur, [])  # type: ignore[attr-defined]
        pg._insert_hits(cur, hits)  # type: ignore[attr-defined]
        pg._insert_hits(cur, hits)  # a retried batch's: stored once  # type: ignore[attr-defined]
        rows = cur.execute(f"SELECT key, value FROM {HITS} ORDER BY key").fetchall()
    assert rows == [(f"k{n}", None) for n in range(5)]


def test_the_probes_read_each_keys_range_of_the_primary_key(pg: Storage) -> None:
    """Before any ANALYZE (a new collector's table), with many hits of other keys: the plan
    seeks each asked key (an Index Cond on the key), never reads the stream's whole window
    and filters it by key."""
    rng = random.Random(5)
    others = [
        ("s", f"other{n % 2000}", NOW - rng.randint(0, 3000) * S, n, None) for n in range(20_000)
    ]
    asked = [f"asked{n}" for n in range(120)]
    seen: list[tuple[str, Any]] = []
    with pg._write() as cur:  # type: ignore[attr-defined]
        pg._insert_hits(cur, others)  # type: ignore[attr-defined]
        traced = _Tracing(cur, seen)
        count_probes(traced, [("s", k, NOW - 3600 * S, 5, False) for k in asked], True, HITS)  # type: ignore[arg-type]
        ((sql, params),) = seen
        plan = cur.raw.execute(_q(f"EXPLAIN (FORMAT JSON) {sql}"), params).fetchone()[0]
    nodes = list(_nodes(plan[0]["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name") == HITS]
    assert scans, json.dumps(plan)
    for scan in scans:
        cond = scan.get("Index Cond", "")
        assert "key" in cond and "ANY" not in scan.get("Filter", ""), json.dumps(plan)


class _Tracing:
    """A cursor that records what it runs."""

    def __init__(self, cur: Any, seen: list[tuple[str, Any]]) -> None:
        self._cur, self._seen = cur, seen

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._seen.append((sql, params))
        return self._cur.execute(sql, params)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def test_a_mark_only_moves_on_through_the_arrays(pg: Storage) -> None:
    """The marks' upsert: a later (ts, seq) replaces a mark, an earlier one or the same
    leaves it, for every key of one statement."""
    keys = HOSTILE_KEYS[:8]
    first = [("pb", key, NOW, 10) for key in keys]
    # Alternately earlier, the same, later by seq, later by ts.
    then = [
        ("pb", key, NOW + (n % 4 - 1) * S * (n % 4 != 2), 10 + (n % 4 == 2))
        for n, key in enumerate(keys)
    ]
    with pg._write() as cur:  # type: ignore[attr-defined]
        pg._insert(cur, "playbook_marks", MARK_COLUMNS, first, MARK_UPSERT, 400)  # type: ignore[attr-defined]
        pg._insert(cur, "playbook_marks", MARK_COLUMNS, then, MARK_UPSERT, 400)  # type: ignore[attr-defined]
        found = read_marks(cur, keys, True)
    want = {(p, k): max((NOW, 10), (ts, seq)) for (p, k, ts, seq) in then}
    assert found == want
    assert sorted(set(found.values()) - {(NOW, 10)}) == [(NOW, 11), (NOW + 2 * S, 10)]


def test_placed_logins_read_through_arrays_are_those_read_one_by_one(pg: Storage) -> None:
    """Impossible travel's reads (``storage/_places.py``): every kind of read, for keys that
    text-form arrays would have to escape, gives through arrays the rows each read gives
    alone (the order aside: travel sorts what it reads)."""
    from sqreen.server.storage import _places

    rng = random.Random(11)
    keys = HOSTILE_KEYS[:16]
    rows = [
        (
            key,
            NOW + rng.randint(-3600, 3600) * S,
            f"ev{n}",
            "198.51.100.7",
            1.0,
            2.0,
            5.0,
            None,
            "c",
        )
        for n, key in enumerate(rng.choice(keys) for _ in range(400))
    ]
    with pg._write() as cur:  # type: ignore[attr-defined]
        pg._insert_places(cur, rows)  # type: ignore[attr-defined]
    asks = [
        _places.PlaceAsk(key, NOW - 600 * S, "ev1", NOW + 600 * S, "ev9", 900 * S) for key in keys
    ]
    reads = [
        *(_places._around(ask) for ask in asks),
        *(read for ask in asks for read in _places._seeks(ask)),
        *((_places._NEWEST, [key, 8]) for key in keys),
    ]
    arrays = pg._read_places(reads)  # type: ignore[attr-defined]
    pg._ARRAYS = False  # type: ignore[attr-defined]  # this storage only: one by one
    each = pg._read_places(reads)  # type: ignore[attr-defined]
    assert len(each) > len(keys)
    assert sorted(arrays) == sorted(each)
