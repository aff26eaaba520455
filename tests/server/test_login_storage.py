"""The explorer's logins in the storage, on SQLite and on PostgreSQL: the throttle's
reservations (atomic across connections, as across collector processes) and the sessions."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqreen.server.storage import Storage, open_storage

from .conftest import Clock

LIMIT = 10
WINDOW = 900.0
PASSWORD_SETTING = "explorer.password"


def test_racing_reservations_never_exceed_the_limit(
    storage: Storage, db_url: str, clock: Clock
) -> None:
    """60 attempts of one client at once, through 3 storages (3 collector processes): exactly
    the limit are counted, the others told how long to wait; another client is unaffected."""
    others = [open_storage(db_url, clock=clock) for _ in range(2)]
    stores = [storage, *others]
    start = threading.Barrier(12)

    def attempt(i: int) -> float:
        if i < 12:
            start.wait(30)
        return stores[i % 3].reserve_login("198.51.100.7", LIMIT, WINDOW)

    try:
        with ThreadPoolExecutor(12) as pool:
            waits = list(pool.map(attempt, range(60)))
    finally:
        for other in others:
            other.close()
    assert waits.count(0.0) == LIMIT
    assert all(1.0 <= w <= WINDOW for w in waits if w)
    assert storage.reserve_login("198.51.100.8", LIMIT, WINDOW) == 0.0


def test_reservations_leave_the_window_and_a_success_clears_them(
    storage: Storage, clock: Clock
) -> None:
    for _ in range(LIMIT):
        assert storage.reserve_login("a", LIMIT, WINDOW) == 0.0
        clock.advance(seconds=60)
    # 10 min after the first: it leaves the 15-min window in 5 (less what the test took).
    assert 290 < storage.reserve_login("a", LIMIT, WINDOW) <= 300
    clock.advance(seconds=300)
    assert storage.reserve_login("a", LIMIT, WINDOW) == 0.0  # the oldest has left
    assert storage.reserve_login("a", LIMIT, WINDOW) > 0
    storage.clear_login_failures("a")
    assert storage.reserve_login("a", LIMIT, WINDOW) == 0.0
    storage.reserve_login("b", LIMIT, WINDOW)
    clock.advance(seconds=WINDOW)
    assert storage.purge_login_failures(WINDOW) == 2
    assert storage.purge_login_failures(WINDOW) == 0


def test_sessions_end_by_logout_expiry_and_a_new_password(storage: Storage, clock: Clock) -> None:
    storage.set_setting(PASSWORD_SETTING, "hash-1")
    assert storage.open_session("s1", 3600, PASSWORD_SETTING, "hash-1")
    assert storage.open_session("s2", 3600, PASSWORD_SETTING, "hash-1")
    assert storage.open_session("s3", 60, PASSWORD_SETTING, "hash-1")
    assert storage.session_active("s1") and storage.session_active("s2")
    assert not storage.session_active("unknown")

    storage.end_session("s1")  # a logout ends that session only
    assert not storage.session_active("s1") and storage.session_active("s2")
    clock.advance(seconds=61)
    assert not storage.session_active("s3") and storage.session_active("s2")

    storage.set_setting_ending_sessions(PASSWORD_SETTING, "hash-2")
    assert storage.get_setting(PASSWORD_SETTING) == "hash-2"
    assert not storage.session_active("s2")
    # A login that checked the old password, finishing after the change, opens nothing.
    assert not storage.open_session("s4", 3600, PASSWORD_SETTING, "hash-1")
    assert not storage.session_active("s4")
    assert storage.open_session("s5", 3600, PASSWORD_SETTING, "hash-2")
    assert storage.session_active("s5")
