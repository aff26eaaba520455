"""Elastic Common Schema (ECS 8.x) documents for stored events and alerts.

The fields and where each comes from are the table of ``docs/export.md`` (a test reads that
table and checks both ways: every field emitted is documented, every documented field is
emitted for a record that has it). What ECS has no field for stays under ``sqreen.*``, ECS's
place for a producer's own fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .source import (
    alert_address,
    compact,
    outcome,
    request_field,
    severity,
    user_email,
    user_id,
    user_name,
)

__all__ = ["ecs_alert", "ecs_event"]

ECS_VERSION: Final = "8.11.0"
#: ECS's ``event.severity`` is the producer's number: ours is OCSF's scale (1, 3, 5), so that
#: both exports rank alike.
SEVERITY_NUMBER: Final = {"info": 1, "warning": 3, "critical": 5}

#: ECS categorization by the name's prefix (ECS's allowed event.category values), then the
#: event.type by the whole name (with its own category where the prefix's does not expect
#: that type: ECS lists the types each category expects); a name not listed is of its
#: prefix's category (else ``web``) and type ``info``.
CATEGORY: Final = {
    "auth": "authentication",
    "authz": "iam",
    "admin": "iam",
    "security": "intrusion_detection",
    "data": "database",
}
TYPES: Final = {
    "auth.login.success": ["start"],
    "auth.login.failure": ["start"],
    "auth.logout": ["end"],
    "admin.user.created": ["user", "creation"],
    "admin.user.deleted": ["user", "deletion"],
    "admin.role.changed": ["user", "change"],
    "authz.permission.changed": ["change"],
    "security.blocked": ["denied"],
    "security.rate.limited": ["denied"],
}
#: Names whose category is not their prefix's: ``authentication`` expects only start, end
#: and info, ``iam`` neither allowed nor denied (an access decision is ``iam``/``info``, its
#: result in ``event.outcome``).
NAMED: Final = {
    "auth.signup": ("iam", ["user", "creation"]),
    "auth.mfa.enabled": ("iam", ["user", "change"]),
    "auth.mfa.disabled": ("iam", ["user", "change"]),
    "admin.settings.changed": ("configuration", ["change"]),
    "authz.access.granted": ("iam", ["info"]),
    "authz.access.denied": ("iam", ["info"]),
}


def categorize(name: str) -> tuple[list[str], list[str]]:
    """ECS's ``event.category`` and ``event.type`` of an event name."""
    named = NAMED.get(name)
    if named is not None:
        return [named[0]], named[1]
    return [CATEGORY.get(name.partition(".")[0], "web")], TYPES.get(name, ["info"])


def _geo(info: Mapping[str, Any]) -> dict[str, Any]:
    lat, lon = info.get("latitude"), info.get("longitude")
    return {
        "country_iso_code": info.get("country"),
        "city_name": info.get("city"),
        "location": {"lat": lat, "lon": lon} if lat is not None and lon is not None else None,
    }


def ecs_event(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The ECS document of a stored event (its ``to_json()``)."""
    name: str = doc["name"]
    ip = request_field(doc, "ip")
    info: Mapping[str, Any] = doc.get("ip_info") or {}
    user = doc.get("user") or {}
    category, types = categorize(name)
    return compact(
        {
            "@timestamp": doc["timestamp"],
            "ecs": {"version": ECS_VERSION},
            "message": name,
            "event": {
                "id": doc["id"],
                "kind": "event",
                "category": category,
                "type": types,
                "outcome": outcome(name),
                "action": name,
                "severity": SEVERITY_NUMBER[severity(name)],
                "ingested": doc["received_at"],
                "module": "sqreen",
                "dataset": "sqreen.events",
            },
            "user": {"id": user_id(doc), "name": user_name(doc), "email": user_email(doc)},
            "source": {
                "ip": ip,
                "geo": _geo(info),
                "as": {"number": info.get("asn")},
            },
            "user_agent": {"original": request_field(doc, "user_agent")},
            "url": {"path": request_field(doc, "path")},
            "http": {"request": {"method": request_field(doc, "method")}},
            "service": {"name": doc.get("app")},
            "host": {"name": doc.get("host")},
            "related": {
                "ip": [ip] if ip else None,
                "user": sorted({str(v) for v in user.values()}) or None,
            },
            "sqreen": {
                "seq": doc["seq"],
                "user": doc.get("user"),
                "properties": doc.get("properties"),
                "target": doc.get("target"),
                "route": request_field(doc, "route"),
                "ip": {
                    "kind": info.get("kind"),
                    "provider": info.get("provider"),
                    "score": info.get("score"),
                    "reasons": info.get("reasons"),
                },
                "enrichment": doc.get("enrichment"),
            },
        }
    )


def ecs_alert(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The ECS document of a playbook's alert (its ``to_json()``)."""
    address = alert_address(doc)
    by_user = doc["group_by"].startswith("user")
    denied = doc["mode"] == "enforce" and doc["action"] != "alert"
    return compact(
        {
            "@timestamp": doc["created_at"],
            "ecs": {"version": ECS_VERSION},
            "message": doc["summary"],
            "event": {
                "id": str(doc["id"]),
                "kind": "alert",
                "category": ["intrusion_detection"],
                "type": ["denied" if denied else "info"],
                "action": doc["action"],
                "start": doc["first_event_at"],
                "end": doc["last_event_at"],
                "module": "sqreen",
                "dataset": "sqreen.alerts",
            },
            "rule": {"id": doc["playbook"], "name": doc["playbook"]},
            "source": {"ip": address},
            "related": {
                "ip": [address] if address else None,
                "user": [doc["group_key"]] if by_user else None,
            },
            "sqreen": {
                "alert": {
                    "group_by": doc["group_by"],
                    "group_key": doc["group_key"],
                    "count": doc["count"],
                    "events": doc["events"],
                    "mode": doc["mode"],
                    "block_id": doc["block_id"],
                }
            },
        }
    )
