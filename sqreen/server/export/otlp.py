"""Events and alerts as OpenTelemetry logs: an OTLP/HTTP ``ExportLogsServiceRequest``.

Built with ``opentelemetry-proto`` (the protocol's own generated messages) rather than
through the SDK's ``LoggerProvider``: the SDK's batch processor acknowledges nothing to its
caller (a full queue drops, a failed export is logged), and its ``OTLPLogExporter`` takes
the SDK's log records from a private module (``opentelemetry.sdk._logs``) and retries on
its own schedule inside ``export()``. The forwarder needs the opposite: one request a batch,
its answer as the acknowledgement that moves the cursor, and its own backoff.

Each record is one log record: its time is the event's own (an alert's: when it was
raised), its observed time the receipt, its body the message, and its attributes the
record's ECS document flattened to dotted keys (``event.action``, ``user.name``,
``source.ip``...: the names OpenTelemetry's semantic conventions share with ECS).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from ..._version import __version__
from .records import Kind

__all__ = ["CONTENT_TYPE", "encode_logs"]

CONTENT_TYPE: Final = "application/x-protobuf"
#: OpenTelemetry's severity numbers: INFO, WARN, ERROR (an alert is an ERROR to look at).
SEVERITY: Final = {1: (9, "INFO"), 3: (13, "WARN"), 5: (17, "ERROR")}
ALERT_SEVERITY: Final = (17, "ERROR")


def _value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return AnyValue(array_value=ArrayValue(values=[_value(v) for v in value]))
    return AnyValue(string_value=json.dumps(value, separators=(",", ":")))


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in doc.items():
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _nanos(stamp: str) -> int:
    when = datetime.fromisoformat(stamp)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def log_record(kind: Kind, ecs: Mapping[str, Any]) -> LogRecord:
    """One record's log, from its ECS document."""
    event = ecs["event"]
    number, text = ALERT_SEVERITY if kind == "alert" else SEVERITY[event["severity"]]
    attributes = [
        KeyValue(key=key, value=_value(value))
        for key, value in _flatten(ecs)
        if key not in ("@timestamp", "message")
    ]
    return LogRecord(
        time_unix_nano=_nanos(ecs["@timestamp"]),
        observed_time_unix_nano=_nanos(event.get("ingested", ecs["@timestamp"])),
        severity_number=number,  # type: ignore[arg-type]
        severity_text=text,
        body=AnyValue(string_value=ecs.get("message", "")),
        attributes=attributes,
    )


def encode_logs(records: Iterable[tuple[Kind, Mapping[str, Any]]]) -> bytes:
    """The serialized ``ExportLogsServiceRequest`` of (kind, ECS document) pairs."""
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(
                    attributes=[
                        KeyValue(key="service.name", value=_value("sqreen-collector")),
                        KeyValue(key="service.version", value=_value(__version__)),
                    ]
                ),
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name="sqreen.export", version=__version__),
                        log_records=[log_record(kind, doc) for kind, doc in records],
                    )
                ],
            )
        ]
    )
    encoded: bytes = request.SerializeToString()
    return encoded
