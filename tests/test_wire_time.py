"""Timestamps in wire form take a short path through the collector's checks: the same
results (value, normal form, µs, refusal and its message) as the long one, whether their
second is remembered or not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sqreen import _wire_time
from sqreen._limits import InvalidEvent
from sqreen._wire_time import (
    bounded,
    format_timestamp,
    normal_timestamp,
    parse_timestamp,
    time_us,
)

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


def long_us(value: object) -> int:
    at = long_path(value) - datetime(1970, 1, 1, tzinfo=UTC)
    return (at.days * 86_400 + at.seconds) * 1_000_000 + at.microseconds


@pytest.mark.parametrize("value", WIRE + OTHER)
def test_a_time_reads_as_the_same_microseconds_first_and_once_its_second_is_remembered(
    value: str,
) -> None:
    _wire_time._SECONDS.clear()
    assert time_us(value) == long_us(value)
    assert (value[:19] in _wire_time._SECONDS) == (value in WIRE)  # only the wire's form
    assert time_us(value) == long_us(value)


@pytest.mark.parametrize("value", REFUSED)
def test_what_is_refused_is_refused_by_time_us_with_the_same_message(value: object) -> None:
    with pytest.raises(InvalidEvent) as expected:
        long_path(value)
    with pytest.raises(InvalidEvent) as refused:
        time_us(value)
    assert str(refused.value) == str(expected.value)


@pytest.mark.parametrize(
    "fraction",
    [
        "+12345",
        "-12345",
        " 12345",
        "12345 ",
        "1_2345",
        "\uff11\uff12\uff13\uff14\uff15\uff16",  # fullwidth digits
        "\u0663" * 6,  # Arabic-Indic digits: int() reads them
        "12345\n",
        "1234\x00",
        "abcdef",
    ],
)
def test_a_remembered_second_reads_no_fraction_the_wire_does_not_write(fraction: str) -> None:
    """Once "2026-12-02T04:11:01" is remembered, only six ASCII digits after it are read as
    the wire's form: int() also takes signs, spaces, underscores and other scripts' digits.
    The rest reads as parsing reads it, or is refused with its message."""
    assert time_us("2026-12-02T04:11:01.000000Z") == long_us("2026-12-02T04:11:01.000000Z")
    assert "2026-12-02T04:11:01" in _wire_time._SECONDS  # remembered
    value = f"2026-12-02T04:11:01.{fraction}Z"
    try:
        expected: object = long_us(value)
    except InvalidEvent as exc:
        expected = str(exc)
    try:
        got: object = time_us(value)
    except InvalidEvent as exc:
        got = str(exc)
    assert got == expected


def test_the_remembered_seconds_are_bounded() -> None:
    """A batch of times each in a second of its own (a hostile SDK) keeps no more than
    SECONDS_MAX of them, and every one still reads right."""
    base = 1_700_000_000
    for n in range(_wire_time.SECONDS_MAX + 50):
        value = format_timestamp(float(base + n * 61) + 0.25)
        assert time_us(value) == long_us(value)
        assert len(_wire_time._SECONDS) <= _wire_time.SECONDS_MAX


class _FromIsoformat314(datetime):
    """``datetime`` as Python 3.14 reads ISO text: "T24:00:00" with nothing but zeros after it
    is the next day's midnight; hour 24 with anything else is refused."""

    @classmethod
    def fromisoformat(cls, text: str) -> datetime:  # type: ignore[override]
        if text[10:13] == "T24":
            rest = text[13:]
            if rest.rstrip("Z") not in (":00", ":00:00", ":00:00.000000"):
                raise ValueError(f"hour 24 with a time after midnight: {text!r}")
            return super().fromisoformat(f"{text[:10]}T00{rest}") + timedelta(days=1)
        return super().fromisoformat(text)


def test_hour_24_is_never_a_remembered_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read as 3.14 reads it, "T24:00:00.000000Z" is the next midnight, in its normal form;
    it must not make "T24:00:00" a second whose other fractions are then taken as times."""
    monkeypatch.setattr(_wire_time, "datetime", _FromIsoformat314)
    _wire_time._SECONDS.clear()
    midnight = "2026-12-02T24:00:00.000000Z"
    assert time_us(midnight) == long_us("2026-12-03T00:00:00.000000Z")
    assert normal_timestamp(midnight) == "2026-12-03T00:00:00.000000Z"
    with pytest.raises(InvalidEvent, match="is not ISO 8601"):
        time_us("2026-12-02T24:00:00.000001Z")
