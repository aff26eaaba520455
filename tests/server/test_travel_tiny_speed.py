"""Impossible travel at a speed ``--travel-speed`` accepts (above 0) but so low that its
window (half the Earth's circumference at that speed, in µs) is past a 64-bit integer:
its reads bound the window at what both databases' integers hold, and it alerts.

On PostgreSQL the reads of ``login_places`` went through ``?::int8[]`` arrays with the
bounds as they were: the cast failed ("bigint out of range"), the enricher failed on every
batch with a placed login, and no alert was raised; SQLite raised OverflowError on the
reads it makes when a login is older than the places it keeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sqreen.server.intel import ImpossibleTravel, IpIntel
from sqreen.server.intel._travel import MOST_KM
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.storage import Storage
from sqreen.server.storage._places import PlaceAsk, PlaceRow

from .test_travel import LONDON_IP, SYDNEY_IP, body, city_mmdb, login, travels  # noqa: F401

#: Slow enough that the window passes 2**63 µs (``ImpossibleTravel`` takes it; ``--travel-speed``
#: now refuses a speed below 1 km/h).
TINY_SPEED = 1e-6


def test_the_window_of_a_tiny_speed_is_past_int8() -> None:
    assert int(MOST_KM / TINY_SPEED * 3600 * 1_000_000) > 2**63


def test_a_window_past_int8_still_reads_the_stored_places(storage: Storage) -> None:
    """The storage answers a window past a 64-bit integer as an unbounded one."""
    at = 1_800_000_000_000_000
    row = PlaceRow("u" * 32, at - 10, "e0", "198.51.100.7", 1.0, 2.0, 3.0, None, "c")
    with storage._write() as cur:  # type: ignore[attr-defined]
        storage._insert_places(cur, [row])  # type: ignore[attr-defined]
    ask = PlaceAsk(row.user_key, at, "e1", at, "e1", 2**70)
    assert storage.nearby_places([ask]) == [row]  # type: ignore[attr-defined]


@pytest.mark.parametrize("speed", [TINY_SPEED, 1e-300], ids=["1e-6", "1e-300"])
def test_a_tiny_travel_speed_still_raises_an_alert(
    storage: Storage,
    city_mmdb: str,  # noqa: F811
    speed: float,
) -> None:
    """1e-300 km/h made the window infinite: OverflowError on every batch with a login."""
    pipeline = IngestPipeline(
        storage,
        enrichers=[IpIntel.open([city_mmdb]), ImpossibleTravel(storage, max_speed=speed)],
    )
    start = datetime.now(UTC) - timedelta(hours=30)
    pipeline(body(login(LONDON_IP, start)))
    pipeline(body(login(SYDNEY_IP, start + timedelta(hours=24))))
    assert len(travels(storage)) == 1
