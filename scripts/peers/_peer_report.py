"""The report an injection plugin writes when the suite ends (``scripts/peers/run.py``'s
``request_problems`` reads it): what the plugin saw, the events delivered to the memory
transport, those that carried another request's path, and the SDK's internal errors."""

from __future__ import annotations

import json
import os
from typing import Any

import sqreen


def write_report(seen: dict[str, Any], expected: dict[int, str]) -> None:
    """Flush the client and write ``seen`` with what was delivered to ``SQREEN_PEER_REPORT``;
    ``expected`` maps an event's ``seq`` property to the path its request must carry."""
    client = sqreen._hub.active
    events: list[dict[str, Any]] = []
    internal_errors = 0
    if client is not None:
        client.flush(30.0)
        events = list(getattr(client.transport, "events", []))
        internal_errors = client.internal_errors
    wrong_event = [
        (e["properties"]["seq"], e["request"] and e["request"]["path"])
        for e in events
        if e["properties"]["seq"] in expected
        and (e["request"] or {}).get("path") != expected[e["properties"]["seq"]]
    ]
    report = dict(
        seen, delivered=len(events), wrong_event=wrong_event, internal_errors=internal_errors
    )
    with open(os.environ["SQREEN_PEER_REPORT"], "w") as f:
        json.dump(report, f)
