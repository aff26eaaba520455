"""Timestamps in wire form take a short path through the collector's checks: the same
results (value, normal form, refusal and its message) as the long one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sqreen._limits import InvalidEvent
from sqreen._wire_time import bounded, format_timestamp, normal_timestamp, parse_timestamp

WIRE = [
    "2026-12-02T04:11:01.251419Z",
    "1970-01-01T00:00:00.000000Z",
    "8999-12-31T23:59:59.999999Z",
    "2024-02-29T12:00:00.000000Z",
]
OTHER = [
    "2026-12-02T04:11:01Z",
    "2026-12-02 04:11:01.251419Z",  # a space for the T
    "2026-12-02T04:11:01.251419+02:00",
    "2026-12-02T04:11:01.251419",  # naive: UTC
    "1969-12-31T23:59:59.999999Z",  # before 1970: 1970
    "9000-01-01T00:00:00.000001Z",  # after 9000: 9000
    "9999-12-31T23:59:59.999999Z",
    "0001-01-01T00:00:00.000000Z",
]
REFUSED = [
    "2023-02-30T00:00:00.000000Z",
    "2023-02-28T24:00:00.000000Z",
    "2023-02-28T23:59:60.000000Z",
    "٢٠٢٣-02-28T23:59:59.000000Z",  # other digits
    "not a time",
    "",
    17,
    None,
]


def long_path(value: object) -> datetime:
    """What parse_timestamp did before its short path."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidEvent("timestamp", "type", "must be an ISO 8601 string")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("timestamp", "format", f"{value[:64]!r} is not ISO 8601") from None
    return bounded(dt if dt.tzinfo else dt.replace(tzinfo=UTC))


@pytest.mark.parametrize("value", WIRE + OTHER)
def test_a_time_parses_and_normalises_as_before(value: str) -> None:
    parsed = parse_timestamp(value)
    assert parsed == long_path(value)
    assert parsed.utcoffset() is not None and not parsed.utcoffset()
    assert normal_timestamp(value) == format_timestamp(long_path(value))


@pytest.mark.parametrize("value", WIRE)
def test_a_time_in_wire_form_is_its_own_normal_form(value: str) -> None:
    assert normal_timestamp(value) is value


@pytest.mark.parametrize("value", REFUSED)
def test_what_was_refused_is_refused_with_the_same_message(value: object) -> None:
    with pytest.raises(InvalidEvent) as expected:
        long_path(value)
    for parse in (parse_timestamp, normal_timestamp):
        with pytest.raises(InvalidEvent) as refused:
            parse(value)
        assert str(refused.value) == str(expected.value)
