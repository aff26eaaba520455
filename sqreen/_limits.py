"""The limits of an event, and the error that names the one an event broke.

One table, :data:`LIMITS`, shared by the SDK (``track()``) and the collector (``parse_event``),
so that an event the SDK accepts is an event the collector stores, and the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["LIMITS", "InvalidEvent", "Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    name_max: int = 255
    max_properties: int = 16
    key_max: int = 128
    str_value_max: int = 4096
    max_depth: int = 3
    max_list_items: int = 256
    max_event_bytes: int = 64 * 1024
    max_identifiers: int = 16
    identifier_max: int = 256
    target_field_max: int = 256
    id_max: int = 64
    request_field_max: int = 8 * 1024
    max_batch_events: int = 1000


LIMITS: Final = Limits()


class InvalidEvent(ValueError):
    """An event broke one of the rules of :data:`LIMITS`.

    ``field`` names what was wrong (``"name"``, ``"properties.foo"``, ``"timestamp"``...) and
    ``rule`` is a short stable identifier of the rule (``"too_long"``, ``"max_properties"``...),
    used with the field's first part to log each (event name, argument, rule) once.
    """

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.rule = rule
        self.message = message
