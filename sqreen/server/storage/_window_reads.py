"""What a windows' transaction reads (:meth:`~._playbooks.PlaybookQueries.update_windows`):
the probes' counts, the quiet times and marks of the keys that may fire, and their hits."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._parts import unnest
from ._rows import dumps

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = [
    "COLUMNS_MAX",
    "FETCH_MAX",
    "PRESENT_MAX",
    "WINDOW_CHUNK",
    "AddsTold",
    "HorizonTold",
    "MarkValues",
    "ProbeValues",
    "QuietKey",
    "WindowKey",
    "adds_of",
    "adds_text",
    "candidates_of",
    "count_probes",
    "fetch_hits",
    "padded",
    "present_hits",
    "quiet_times",
    "read_marks",
]

#: Keys a statement, when reading or writing windows (parameters stay under both limits).
WINDOW_CHUNK: Final = 400
#: The sizes IN lists are padded to (repeating their last item): a handful of statement
#: texts, prepared once each and then found in the driver's statement cache.
IN_SIZES: Final = (1, 4, 16, 64, 128, 256, WINDOW_CHUNK)
#: The most recent hits a key's rules are evaluated on (a key with more, in a window, has
#: long fired whatever counts them, unless a rule keeps almost firing: then it is an
#: approximation on its latest hits).
FETCH_MAX: Final = 4096
#: Counts a stream's probes statement makes at most (a column each, over every hit it reads):
#: the rules' windows, which all its keys ask for. A probe of a time few keys ask for (an
#: alert playbook's mark, one key's) past these is counted alone (:func:`_count_alone`).
COLUMNS_MAX: Final = 8
#: Probes counted alone a statement (``UNION ALL``: SQLite allows 500 terms).
ALONE_CHUNK: Final = 64
#: Hits in the windows a process reads by key when it forgets what it knew of them (at its
#: first batch, or when another process wrote what the log cannot tell): with more, it
#: knows only that none is newer than the newest (:func:`present_hits`).
PRESENT_MAX: Final = 4096

T = TypeVar("T")
WindowKey = tuple[str, str]
#: Told, by key, what other processes added to the windows since a read.
AddsTold = Callable[[dict[WindowKey, int]], None]
#: Told the time of the newest hit stored (None: no hit).
HorizonTold = Callable[[int | None], None]
QuietKey = tuple[str, str]  # (playbook id, group key)
#: A mark: (time µs, seq) of the last event an alert playbook's alert counted on a key.
MarkValues = tuple[int, int]
#: A probe: (stream, key, since µs, how many, distinct values?).
ProbeValues = tuple[str, str, int, int, bool]


def padded(items: Sequence[T]) -> list[T]:
    """``items`` (at most WINDOW_CHUNK), their last repeated up to the next of IN_SIZES."""
    size = next(n for n in IN_SIZES if n >= len(items))
    return [*items, *[items[-1]] * (size - len(items))]


def keys_in(keys: Sequence[str], arrays: bool) -> tuple[str, list[Any]]:
    """``key IN (?, ...)`` for ``keys`` (at most WINDOW_CHUNK) and its parameters, padded to
    one of IN_SIZES (a handful of statement texts); with ``arrays`` (PostgreSQL),
    ``key = ANY(?::text[])``: one text and one parameter for any number of keys. psycopg
    splits a statement of more than 50 parameters into its placeholders again at each call,
    in Python, and PostgreSQL parses and plans it again: most of the playbooks' CPU there
    (bench/bench_playbooks_ab.py --backend postgres)."""
    if arrays:
        return "key = ANY(?::text[])", [list(keys)]
    names = padded(keys)
    return f"key IN ({', '.join('?' * len(names))})", names


def quiet_times(
    cur: Cursor, group_keys: Sequence[str], now: int, arrays: bool = False
) -> dict[QuietKey, int]:
    """Until when each playbook is quiet for these group keys (those quiet now)."""
    rows = _of_keys(
        cur,
        "SELECT playbook, key, until_at FROM playbook_quiet WHERE until_at > ? AND",
        group_keys,
        arrays,
        now,
    )
    return {(p, k): until for p, k, until in rows}


def read_marks(
    cur: Cursor, group_keys: Sequence[str], arrays: bool = False
) -> dict[QuietKey, MarkValues]:
    """The marks of alert playbooks on these group keys."""
    rows = _of_keys(
        cur, "SELECT playbook, key, ts, seq FROM playbook_marks WHERE", group_keys, arrays
    )
    return {(p, k): (int(ts), int(seq)) for p, k, ts, seq in rows}


def _of_keys(
    cur: Cursor, head: str, group_keys: Sequence[str], arrays: bool, *before: object
) -> list[Any]:
    """The rows of ``head`` and :func:`keys_in` for these group keys, a chunk a statement
    (``before``: the parameters of ``head``)."""
    out: list[Any] = []
    for i in range(0, len(group_keys), WINDOW_CHUNK):
        clause, params = keys_in(group_keys[i : i + WINDOW_CHUNK], arrays)
        out += cur.execute(f"{head} {clause}", [*before, *params]).fetchall()
    return out


def candidates_of(counts: Mapping[ProbeValues, int]) -> dict[WindowKey, int]:
    """The keys with a probe that reached its count: the oldest time of those probes."""
    out: dict[WindowKey, int] = {}
    for (stream, key, since, need, _), n in counts.items():
        if n >= need:
            out[(stream, key)] = min(since, out.get((stream, key), since))
    return out


def count_probes(
    cur: Cursor, probes: Sequence[ProbeValues], arrays: bool = False, table: str = "window_hits"
) -> dict[ProbeValues, int]:
    """How many hits (or distinct values) each probe's key has since its time: one
    statement for the keys of a stream (``GROUP BY key``, over the primary key's range of
    each), a column for each window and way of counting its rules ask for (the
    COLUMNS_MAX asked by the most keys; the other probes are counted alone). ``arrays``:
    keys sent as arrays (:func:`keys_in`); ``table``: where the hits are."""
    by_stream: dict[str, dict[tuple[int, bool], set[str]]] = {}
    for stream, key, since, _, distinct in probes:
        by_stream.setdefault(stream, {}).setdefault((since, distinct), set()).add(key)
    counts: dict[tuple[str, str, int, bool], int] = {}
    alone: list[tuple[str, str, int, bool]] = []
    for stream, asking in sorted(by_stream.items()):
        columns = sorted(asking, key=lambda c: (-len(asking[c]), c))
        for since, distinct in columns[COLUMNS_MAX:]:
            alone += [(stream, key, since, distinct) for key in sorted(asking[(since, distinct)])]
        asked = sorted(columns[:COLUMNS_MAX])
        keys: set[str] = set()
        for column in asked:
            keys |= asking[column]
        oldest = asked[0][0]
        select = ", ".join(
            ("count(DISTINCT value)" if distinct else "count(*)")
            if since == oldest
            else (
                "count(DISTINCT CASE WHEN ts >= ? THEN value END)"
                if distinct
                else "sum(CASE WHEN ts >= ? THEN 1 ELSE 0 END)"
            )
            for since, distinct in asked
        )
        times = [since for since, _ in asked if since != oldest]
        ordered = sorted(keys)
        for i in range(0, len(ordered), WINDOW_CHUNK):
            part = ordered[i : i + WINDOW_CHUNK]
            if arrays:
                # A range of the primary key read for each key, whatever the planner makes
                # of the table's statistics: with ``key = ANY(...)`` PostgreSQL read every
                # hit of the stream in the window and filtered them by key (a table it had
                # not analysed yet: 4 000 hits read for 120 keys, and a batch's whole
                # window of an attack's).
                sql = (
                    f"SELECT p.k, c.* FROM unnest(?::text[]) AS p(k), LATERAL (SELECT {select} "
                    f"FROM {table} WHERE stream = ? AND key = p.k AND ts >= ?) AS c"
                )
                params = [part, *times, stream, oldest]
            else:
                clause, names = keys_in(part, False)
                sql = (
                    f"SELECT key, {select} FROM {table} WHERE stream = ? AND ts >= ? "
                    f"AND {clause} GROUP BY key"
                )
                params = [*times, stream, oldest, *names]
            for key, *found in cur.execute(sql, params).fetchall():
                for (since, distinct), n in zip(asked, found, strict=True):
                    counts[(stream, key, since, distinct)] = int(n or 0)  # a sum of no rows
    counts.update(
        _count_alone_arrays(cur, alone, table) if arrays else _count_alone(cur, alone, table)
    )
    return {p: counts.get((p[0], p[1], p[2], p[4]), 0) for p in probes}


def _count_alone(
    cur: Cursor, probes: Sequence[tuple[str, str, int, bool]], table: str
) -> dict[tuple[str, str, int, bool], int]:
    """Count each of ``probes`` ((stream, key, since, distinct?)) alone, over its key's range
    of the primary key: a ``UNION ALL`` of a term each, ALONE_CHUNK terms a statement, in
    as few texts as IN lists (the terms padded like them)."""
    counts: dict[tuple[str, str, int, bool], int] = {}
    for distinct in (False, True):
        mine = [p for p in probes if p[3] == distinct]
        what = "count(DISTINCT value)" if distinct else "count(*)"
        for i in range(0, len(mine), ALONE_CHUNK):
            part = padded(mine[i : i + ALONE_CHUNK])
            rows = cur.execute(
                " UNION ALL ".join(
                    f"SELECT {n} AS n, {what} AS found FROM {table} "
                    "WHERE stream = ? AND key = ? AND ts >= ?"
                    for n in range(len(part))
                ),
                [v for stream, key, since, _ in part for v in (stream, key, since)],
            ).fetchall()
            for n, found in rows:
                counts[part[n]] = int(found)
    return counts


def _count_alone_arrays(
    cur: Cursor, probes: Sequence[tuple[str, str, int, bool]], table: str
) -> dict[tuple[str, str, int, bool], int]:
    """:func:`_count_alone` with the probes sent as arrays (:func:`keys_in`): a statement of
    a count a probe, each over its key's range of the primary key."""
    counts: dict[tuple[str, str, int, bool], int] = {}
    for distinct in (False, True):
        mine = [p for p in probes if p[3] == distinct]
        if not mine:
            continue
        what = "count(DISTINCT value)" if distinct else "count(*)"
        source, params = unnest(("text", "text", "int8"), [p[:3] for p in mine])
        rows = cur.execute(
            f"SELECT p.n, (SELECT {what} FROM {table} "
            "WHERE stream = p.s AND key = p.k AND ts >= p.t) "
            f"FROM {source} WITH ORDINALITY AS p(s, k, t, n)",
            params,
        ).fetchall()
        for n, found in rows:
            counts[mine[n - 1]] = int(found)
    return counts


def fetch_hits(
    cur: Cursor, wanted: dict[WindowKey, int], table: str = "window_hits"
) -> dict[WindowKey, list[tuple[int, int, str | None]]]:
    out: dict[WindowKey, list[tuple[int, int, str | None]]] = {}
    for (stream, key), since in sorted(wanted.items()):
        rows = cur.execute(
            f"SELECT ts, seq, value FROM {table} WHERE stream = ? AND key = ? "
            "AND ts >= ? ORDER BY ts DESC, seq DESC LIMIT ?",
            [stream, key, since, FETCH_MAX],
        ).fetchall()
        out[(stream, key)] = [(ts, seq, value) for ts, seq, value in reversed(rows)]
    return out


def adds_text(counts: Mapping[WindowKey, int]) -> str:
    """A row of ``window_writes``: the hits a transaction added per key, as
    ``{stream: [key, n, key, n, ...]}`` (a stream's id once: 500 users' keys, 11 KB)."""
    by_stream: dict[str, list[str | int]] = {}
    for (stream, key), n in counts.items():
        by_stream.setdefault(stream, []).extend((key, n))
    return dumps(by_stream)


def adds_of(texts: Iterable[str]) -> dict[WindowKey, int] | None:
    """What rows of ``window_writes`` (:func:`adds_text`) added per key, together; None when
    one cannot say it: without its counts (``""``), of another version, or damaged (then the
    windows are counted again, rather than every batch failing until the row is purged)."""
    told: dict[WindowKey, int] = {}
    try:
        for text in texts:
            if not text:
                return None
            for stream, flat in json.loads(text).items():
                for key, n in zip(flat[::2], flat[1::2], strict=True):
                    told[(stream, key)] = told.get((stream, key), 0) + int(n)
    except (ValueError, TypeError, AttributeError):
        return None
    return told


def present_hits(
    cur: Cursor,
    after: int,
    tell: Callable[[int, dict[WindowKey, int]], None],
    table: str = "window_hits",
) -> None:
    """Tell ``tell`` ``after`` and the hits at that time or later per key, if they are at
    most PRESENT_MAX (counted in SQL first: a large table costs no row read in Python)."""
    (n,) = cur.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE ts >= ? LIMIT ?) AS h",
        (after, PRESENT_MAX + 1),
    ).fetchone()
    if n > PRESENT_MAX:
        return
    rows = cur.execute(
        # The LIMIT keeps the subquery apart: read by the ts index, not the whole table in
        # key order for the GROUP BY.
        f"SELECT stream, key, count(*) FROM (SELECT stream, key FROM {table} "
        "WHERE ts >= ? LIMIT ?) AS h GROUP BY stream, key",
        (after, PRESENT_MAX + 1),
    ).fetchall()
    tell(after, {(stream, key): int(count) for stream, key, count in rows})
