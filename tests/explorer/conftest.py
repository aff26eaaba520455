"""Fixtures of the Event Explorer's tests: the collector app on a fresh SQLite database, with
an admin password, and a logged-in client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from sqreen.server.app import create_app
from sqreen.server.explorer import _secrets, set_admin_password
from sqreen.server.storage import Storage, open_storage
from tests._postgres import postgres_cluster, postgres_db, postgres_dsn  # noqa: F401 (fixtures)
from tests.server.conftest import Clock, wire_event

__all__ = ["PASSWORD", "Clock", "csrf_of", "login", "wire_event"]

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash test passwords with scrypt's lowest accepted cost (stored hashes carry it)."""
    monkeypatch.setattr(_secrets, "LOG2_N", 10)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def storage(tmp_path: Path, clock: Clock) -> Iterator[Storage]:
    s = open_storage(str(tmp_path / "sqreen.db"), clock=clock)
    yield s
    s.close()


def make_client(storage: Storage, **kwargs: Any) -> TestClient:
    return TestClient(create_app(storage), base_url="http://testserver", **kwargs)


@pytest.fixture
def anonymous(storage: Storage) -> Iterator[TestClient]:
    """A client of the collector whose admin password is :data:`PASSWORD`, not logged in."""
    set_admin_password(storage, PASSWORD)
    with make_client(storage) as client:
        yield client


@pytest.fixture
def client(anonymous: TestClient) -> TestClient:
    """The same client, logged in to the explorer."""
    login(anonymous)
    return anonymous


def csrf_of(client: TestClient, path: str = "/explorer/login") -> str:
    """The CSRF token on the page at ``path``."""
    found = _CSRF.search(client.get(path).text)
    assert found, f"no CSRF token on {path}"
    return found[1]


def login(client: TestClient, password: str = PASSWORD, check: bool = True, **extra: str) -> Any:
    token = csrf_of(client)
    reply = client.post(
        "/explorer/login",
        data={"password": password, "csrf_token": token, **extra},
        follow_redirects=False,
    )
    if check and password == PASSWORD:
        assert reply.status_code == 303, reply.text
    return reply
