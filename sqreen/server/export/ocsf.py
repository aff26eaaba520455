"""OCSF 1.3 records for stored events and alerts.

Three classes, by what the record says:

- **Authentication (3002)** for ``auth.login.*`` and ``auth.logout``: Logon (1) or Logoff (2),
  status Success, Failure or Unknown from the name.
- **API Activity (6003)** for every other event: what an application's user did through it
  (the apps the SDK runs in are the "API"; ``api.operation`` is the event's name). Chosen
  over Base Event (0), which has no place for the user, the address or the request a SIEM
  searches on, and over one class per name (Account Change, Authorize Session...), whose
  activities only half of the standard names would fit; activity Create/Update/Delete
  where the name says so, else Other (99).
- **Detection Finding (2004)** for a playbook's alert.

What OCSF has no attribute for is in ``unmapped`` (OCSF's place for it). Every field and
its source is the table of ``docs/export.md``, which a test checks against this code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..._version import __version__
from .source import (
    alert_address,
    compact,
    epoch_ms,
    outcome,
    request_field,
    severity,
    user_email,
    user_id,
    user_name,
)

__all__ = ["ocsf_alert", "ocsf_event"]

OCSF_VERSION: Final = "1.3.0"
SEVERITY: Final = {
    "info": (1, "Informational"),
    "warning": (3, "Medium"),
    "critical": (5, "Critical"),
}
STATUS: Final = {"success": (1, "Success"), "failure": (2, "Failure"), "unknown": (0, "Unknown")}
#: API Activity's activity by the name's last word.
API_ACTIVITY: Final = {"created": (1, "Create"), "changed": (3, "Update"), "deleted": (4, "Delete")}
AUTH_ACTIVITY: Final = {"auth.logout": (2, "Logoff")}
LOGON: Final = (1, "Logon")


def _metadata(uid: str, logged: str | None, log_name: str) -> dict[str, Any]:
    return {
        "version": OCSF_VERSION,
        "product": {
            "name": "sqreen collector",
            "vendor_name": "sqreen-sdk",
            "version": __version__,
        },
        "uid": uid,
        "logged_time": epoch_ms(logged) if logged else None,
        "log_name": log_name,
    }


def _endpoint(doc: Mapping[str, Any]) -> dict[str, Any]:
    info: Mapping[str, Any] = doc.get("ip_info") or {}
    return {
        "ip": request_field(doc, "ip"),
        "location": {
            "country": info.get("country"),
            "city": info.get("city"),
            "lat": info.get("latitude"),
            "long": info.get("longitude"),
        },
        "autonomous_system": {"number": info.get("asn")},
    }


def _classify(name: str) -> tuple[int, str, int, str, int, str]:
    """(category uid and name, class uid and name, activity id and name) of an event."""
    if name.startswith("auth.login.") or name == "auth.logout":
        activity = AUTH_ACTIVITY.get(name, LOGON)
        return 3, "Identity & Access Management", 3002, "Authentication", *activity
    activity = API_ACTIVITY.get(name.rpartition(".")[2], (99, "Other"))
    return 6, "Application Activity", 6003, "API Activity", *activity


def ocsf_event(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The OCSF record of a stored event (its ``to_json()``)."""
    name: str = doc["name"]
    category, category_name, class_uid, class_name, activity, activity_name = _classify(name)
    severity_id, severity_name = SEVERITY[severity(name)]
    status_id, status = STATUS[outcome(name)]
    user = {"uid": user_id(doc), "name": user_name(doc), "email_addr": user_email(doc)}
    record = {
        "category_uid": category,
        "category_name": category_name,
        "class_uid": class_uid,
        "class_name": class_name,
        "activity_id": activity,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity,
        "type_name": f"{class_name}: {activity_name}",
        "time": epoch_ms(doc["timestamp"]),
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": status_id,
        "status": status,
        "message": name,
        "metadata": _metadata(doc["id"], doc.get("received_at"), "sqreen.events"),
        "src_endpoint": _endpoint(doc),
        "http_request": {
            "http_method": request_field(doc, "method"),
            "url": {"path": request_field(doc, "path")},
            "user_agent": request_field(doc, "user_agent"),
        },
        "unmapped": {
            "seq": doc["seq"],
            "app": doc.get("app"),
            "host": doc.get("host"),
            "user": doc.get("user"),
            "properties": doc.get("properties"),
            "target": doc.get("target"),
            "ip_info": doc.get("ip_info"),
        },
    }
    if class_uid == 3002:
        record["user"] = user
    else:
        record["actor"] = {"user": user}
        record["api"] = {"operation": name, "service": {"name": doc.get("app")}}
    out = compact(record)
    # What the class requires, when the event has nothing for it: Authentication a user (one
    # of unknown type), API Activity an actor and a source (the app that tracked it, by its
    # name and host: an event outside a request, of no user, is the app's own doing).
    if class_uid == 3002:
        out.setdefault("user", {"type_id": 0, "type": "Unknown"})
    else:
        app = doc.get("app") or "unknown"
        out.setdefault("actor", {"app_name": app})
        host = doc.get("host")
        out.setdefault("src_endpoint", {"hostname": host} if host else {"name": app})
    return out


def ocsf_alert(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The OCSF Detection Finding of a playbook's alert (its ``to_json()``)."""
    blocked = doc["mode"] == "enforce" and doc["action"] != "alert"
    return compact(
        {
            "category_uid": 2,
            "category_name": "Findings",
            "class_uid": 2004,
            "class_name": "Detection Finding",
            "activity_id": 1,
            "activity_name": "Create",
            "type_uid": 200401,
            "type_name": "Detection Finding: Create",
            "time": epoch_ms(doc["created_at"]),
            "start_time": epoch_ms(doc["first_event_at"]),
            "end_time": epoch_ms(doc["last_event_at"]),
            "count": doc["count"],
            "severity_id": 4,
            "severity": "High",
            "status_id": 1,
            "status": "New",
            "is_alert": True,
            # Denied (2) when the playbook blocked the address or the user; else Allowed (1):
            # the finding was only reported.
            "action_id": 2 if blocked else 1,
            "action": "Denied" if blocked else "Allowed",
            "message": doc["summary"],
            "metadata": _metadata(str(doc["id"]), None, "sqreen.alerts"),
            "finding_info": {
                "uid": str(doc["id"]),
                "title": doc["playbook"],
                "desc": doc["summary"],
                "first_seen_time": epoch_ms(doc["first_event_at"]),
                "last_seen_time": epoch_ms(doc["last_event_at"]),
                "analytic": {"name": doc["playbook"], "type_id": 1, "type": "Rule"},
            },
            "src_endpoint": {"ip": alert_address(doc)},
            "unmapped": {
                "group_by": doc["group_by"],
                "group_key": doc["group_key"],
                "events": doc["events"],
                "mode": doc["mode"],
                "playbook_action": doc["action"],
                "block_id": doc["block_id"],
            },
        }
    )
