"""Export of events and alerts to the tools security teams already use.

- :mod:`.source`, :mod:`.ecs`, :mod:`.ocsf`: the stored JSON mapped to Elastic Common Schema
  and OCSF (the mapping is documented, field by field, in ``docs/export.md``);
- :mod:`.records`: records read page by page and turned into documents (``sqreen export``);
- :mod:`.otlp`, :mod:`.sinks`: OTLP/HTTP logs, JSON lines over HTTP or TCP;
- :mod:`.delivery`: one batch to a sink, split when refused, a bad record set aside;
- :mod:`.forwarder`: the live forwarder of ``sqreen serve --export`` and its lag.
"""

from __future__ import annotations

from .ecs import ecs_alert, ecs_event
from .forwarder import ExportLag, Forwarder, export_lag
from .ocsf import ocsf_alert, ocsf_event
from .records import FORMATS, Format, alert_pages, document, event_pages
from .sinks import SCHEMES, Destination, SinkError, parse_destination

__all__ = [
    "FORMATS",
    "SCHEMES",
    "Destination",
    "ExportLag",
    "Format",
    "Forwarder",
    "SinkError",
    "alert_pages",
    "document",
    "ecs_alert",
    "ecs_event",
    "event_pages",
    "export_lag",
    "ocsf_alert",
    "ocsf_event",
    "parse_destination",
]
