"""Poisoned events, shared by the collector's tests and the explorer's browser test: what an
attacker holding an ingest key sends, and rows as collectors stored them before they checked
(a database from before migration 7, or one an older collector still writes to)."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqreen.server.storage.model import to_us

from .conftest import wire_event

#: Erase the line, go to its start, go up one: what was printed before is overwritten.
ESCAPES = "\x1b[2K\r\x1b[1A"
FORGED = f"{ESCAPES}2026-12-01 09:00:00Z  auth.login.success           user=uid=1"
#: Every kind of character a terminal or a page must not be handed as is.
CONTROLS = ("\x1b", "\r", "\x07", "\x7f", "\x9b", "\u202e", "\u2066")
LONE = "\ud800"


def hostile_events() -> list[dict[str, Any]]:
    """One event of each kind of poison, in a batch an SDK would never send."""
    ahead = wire_event(id="ahead", timestamp="8999-06-01T00:00:00Z")
    lone = wire_event(
        id=f"lone-{LONE}",
        properties={
            "note": f"a{LONE}b",
            f"key{LONE}": 1,
            "nested": {"list": ["\udfff", {"\udbff": "\udc00"}]},
        },
        user={"uid": f"4{LONE}2", f"name{LONE}": "x"},
        target={"id": LONE, "type": "doc", "name": "\udfff"},
    )
    lone["request"].update(
        user_agent=f"curl/{LONE}",
        path=f"/login/{LONE}",
        route="/login/\udfff",
        params={"username": LONE, f"q{LONE}": [LONE, {"k": "\udfff"}]},
        body={"content": f"username={LONE}", "truncated": False},
    )
    forged = wire_event(
        id="forged",
        user={"username": f"mallory{FORGED}"},
        properties={"reason": "".join(CONTROLS) + "\u202egnp.exe"},
    )
    forged["request"]["user_agent"] = f"evil{ESCAPES}\x9b2J"
    long = wire_event(id="long-request")
    long["request"].update(
        user_agent="A" * 20_000,
        # Past what a request may take in JSON (256 KiB), in 30,000 parameters too small
        # to be cut one by one, and a body.
        params={f"p{i}": i for i in range(30_000)},
        body={"content": "x" * 300_000, "truncated": False},
    )
    return [
        wire_event(id="year-9999", timestamp="9999-12-31T23:59:59Z"),
        wire_event(id="year-1", timestamp="0001-01-01T00:00:00Z"),
        wire_event(id="year-1-east", timestamp="0001-01-01T00:00:00+01:00"),
        wire_event(id="year-9999-west", timestamp="9999-12-31T23:59:59-01:00"),
        wire_event(id="year-1969", timestamp="1969-12-31T23:59:59Z"),
        ahead,
        lone,
        forged,
        long,
    ]


#: When the events of :func:`hostile_events` are stored: ``"received"`` for their receipt.
STORED_AT = {
    "year-9999": "received",
    "year-9999-west": "received",
    "ahead": "received",
    "year-1": "1970-01-01T00:00:00.000000Z",
    "year-1-east": "1970-01-01T00:00:00.000000Z",
    "year-1969": "1970-01-01T00:00:00.000000Z",
}
HOSTILE_IDS = [*STORED_AT, "lone-\ufffd", "forged", "long-request"]


YEAR_9999 = to_us(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
YEAR_1 = to_us(datetime(1, 1, 1, tzinfo=UTC))
#: A user's identifiers as ``user_key`` stores them (canonical JSON, sorted).
USER_7 = '{"uid":"7"}'


def store_old_rows(write: Callable[[], AbstractContextManager[Any]], received: datetime) -> None:
    """Rows as collectors stored them before they checked: any time, and JSON (ASCII, as
    always) holding escaped lone surrogates. ``write`` is a storage's write transaction."""
    received_us = to_us(received)
    lone = json.dumps(LONE)  # '"\\ud800"': what the JSON columns held
    rows = [
        ("old-9999", YEAR_9999, '{"uid":"7"}', "{}", None),
        ("old-1", YEAR_1, None, "{}", None),
        ("old-ahead", received_us + 3_600_000_000, None, "{}", None),
        (
            "old-lone",
            received_us - 1,
            '{"uid":' + lone + "}",
            '{"note":' + lone + ',"nested":{"k":["\\udfff"]}}',
            '{"ip":"203.0.113.7","user_agent":' + lone + ',"path":"/login","route":"/login",'
            '"method":"POST","params":{' + lone + ':1},"body":{"content":' + lone + ","
            '"truncated":false}}',
        ),
    ]
    with write() as cur:
        for event_id, ts, user_json, properties_json, request_json in rows:
            cur.execute(
                "INSERT INTO events (id, name, ts, received_at, app, host, ip, user_json, "
                "properties_json, request_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id,
                    "auth.login.failure",
                    ts,
                    received_us,
                    "shop",
                    "web1",
                    "203.0.113.7",
                    user_json,
                    properties_json,
                    request_json,
                ),
            )
        cur.execute(
            "INSERT INTO users (key, traits_json, first_seen, last_seen) VALUES (?, ?, ?, ?)",
            (USER_7, '{"plan":' + lone + "}", YEAR_1, received_us),
        )


#: The ids of the events :func:`store_old_rows` stores.
OLD_IDS = ["old-9999", "old-1", "old-ahead", "old-lone"]
