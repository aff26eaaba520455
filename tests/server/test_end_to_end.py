"""SDK -> collector -> block -> middleware, all real: a Flask app on a real server, the SDK's
HTTP transport, ``sqreen serve`` and the ``sqreen`` CLI in subprocesses."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

import sqreen
from sqreen.server.storage import EventFilter, open_storage

from .conftest import SQREEN, ServeProcess, add_key

flask = pytest.importorskip("flask")
serving = pytest.importorskip("werkzeug.serving")
from sqreen.integrations.flask import Sqreen  # noqa: E402

FLUSH = 0.2


def shop() -> flask.Flask:
    app = flask.Flask("shop")
    Sqreen(app)

    @app.post("/orders/<int:n>")
    def order(n: int) -> str:
        flask.request.sqreen.identify({"uid": flask.request.form["uid"]})
        flask.request.sqreen.track("shop.order", properties={"n": n, "coupon": "SPRING"})
        return "ordered"

    return app


@contextlib.contextmanager
def running(app: flask.Flask) -> Iterator[str]:
    """``app`` on a real, threaded werkzeug server on 127.0.0.1."""
    server = serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def cli(*args: str) -> str:
    proc = subprocess.run([*SQREEN, *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def until(status: int, request: Callable[[], httpx.Response], timeout: float = 15) -> int:
    """Repeat ``request`` until it answers ``status``; return how many requests it took."""
    deadline = time.monotonic() + timeout
    for attempt in range(1, 10_000):
        if request().status_code == status:
            return attempt
        assert time.monotonic() < deadline, f"never answered {status}"
        time.sleep(FLUSH / 4)
    raise AssertionError("unreachable")


@pytest.mark.slow
def test_sdk_collector_block_middleware_loop(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    db = str(tmp_path / "e2e.db")
    token = add_key(db)
    collector = serve(db)
    sqreen.init(
        endpoint=collector.url,
        token=token,
        flush_interval=FLUSH,
        heartbeat_interval=FLUSH,
        app_name="shop",
    )
    with (
        running(shop()) as shop_url,
        httpx.Client(headers={"User-Agent": "e2e-test/1.0"}, timeout=10) as http,
    ):
        loop(db, shop_url, http)


def loop(db: str, shop_url: str, http: httpx.Client) -> None:

    def order(n: int, uid: str) -> httpx.Response:
        return http.post(f"{shop_url}/orders/{n}?ref=mail", data={"uid": uid, "card": "x"})

    # Every event stored exactly once, with its request.
    for n in range(20):
        assert order(n, str(n % 3)).status_code == 200
    assert sqreen.flush(timeout=10)
    storage = open_storage(db)
    try:
        events = storage.query_events(EventFilter(name="shop.order"), limit=100)
        assert sorted(e.properties["n"] for e in events) == list(range(20))
        first = next(e for e in events if e.properties["n"] == 4)
        assert first.user == {"uid": "1"} and first.app == "shop"
        assert first.ip == "127.0.0.1"
        assert first.request is not None
        assert first.request["path"] == "/orders/4" and first.request["method"] == "POST"
        assert first.request["route"] == "/orders/<int:n>"
        assert first.request["user_agent"] == "e2e-test/1.0"
        assert first.request["params"] == {"ref": "mail", "uid": "1", "card": "x"}
        assert len(storage.query_events(EventFilter(users=(("uid", "1"),)), limit=100)) == 7
    finally:
        storage.close()

    # Blocked from the CLI (another process): the user's next requests end in 403.
    assert order(100, "42").status_code == 200
    cli("block", "user", "uid=42", "--for", "1h", "--reason", "e2e", "--db", db)
    until(403, lambda: order(101, "42"))
    assert order(102, "7").status_code == 200  # others are not affected

    # Unblocked: the user gets through again.
    cli("unblock", "user", "uid=42", "--db", db)
    until(200, lambda: order(103, "42"))
