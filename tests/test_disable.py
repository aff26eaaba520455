"""``SQREEN_DISABLE=1`` / ``disable=True``: a pass-through, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import sqreen
from sqreen.middleware.asgi import SqreenASGIMiddleware
from sqreen.middleware.wsgi import SqreenWSGIMiddleware

ROOT = Path(__file__).resolve().parent.parent


def run_disabled(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``code`` run by a new Python in ``cwd``, with ``SQREEN_DISABLE=1`` and no other
    ``SQREEN_*`` variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    env.update(SQREEN_DISABLE="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_no_thread_no_file_no_event(tmp_path: Path) -> None:
    code = """
        import os, threading, sqreen
        from sqreen.middleware.wsgi import SqreenWSGIMiddleware
        def app(environ, start_response):
            handle = environ["sqreen.context"]
            results = [handle.track("in.request"), sqreen.track("module.level")]
            handle.identify({"uid": "1"})
            sqreen.auth_track(True, uid="1")
            start_response("200 OK", [])
            return [repr(results).encode()]
        wrapped = SqreenWSGIMiddleware(app)
        body = b"".join(wrapped({"REQUEST_METHOD": "GET", "REMOTE_ADDR": "127.0.0.1"},
                                lambda *a: None))
        sqreen.start()
        sqreen.flush(0.5)
        print(body.decode(), threading.active_count(), sorted(os.listdir(".")))
        """
    proc = run_disabled(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[False, False] 1 []"  # no thread, no sqreen-events.jsonl
    assert proc.stderr == ""  # not even the "no endpoint" warning


def test_the_asgi_middleware_passes_through_with_a_handle() -> None:
    client = sqreen.init(transport="memory:", disable=True)
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["state"]["sqreen"].track("x"))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    import anyio

    async def main() -> None:
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "state": {}}
        await SqreenASGIMiddleware(app)(scope, receive, send)
        assert sent[0]["status"] == 204

    anyio.run(main)
    assert seen == [False]
    assert client.stats()["tracked"] == 0 and client.queue._thread is None


def test_the_wsgi_middleware_ignores_blocks_when_disabled() -> None:
    client = sqreen.init(transport="memory:", disable=True)
    client.blocklist.apply(
        {"version": 1, "items": [{"id": "1", "type": "block_ip", "ip": "203.0.113.0/24"}]}
    )

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    statuses: list[str] = []
    body = SqreenWSGIMiddleware(app)(
        {"REQUEST_METHOD": "GET", "REMOTE_ADDR": "203.0.113.9"},
        lambda status, headers, exc_info=None: statuses.append(status),
    )
    assert list(body) == [b"ok"] and statuses == ["200 OK"]


def test_disable_is_an_init_option_and_an_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert sqreen.init(transport="memory:", disable=True).disabled
    monkeypatch.setenv("SQREEN_DISABLE", "true")
    assert sqreen.init(transport="memory:").disabled
    monkeypatch.setenv("SQREEN_DISABLE", "0")
    assert not sqreen.init(transport="memory:").disabled


@pytest.mark.slow
def test_start_disabled_still_gives_flask_views_their_handle(tmp_path: Path) -> None:
    """An app written for Sqreen's agent (``sqreen.start()``, ``request.sqreen`` in its
    views) runs with ``SQREEN_DISABLE=1``: the handle does nothing (a 500 before: Flask was
    left uninstrumented, and ``request.sqreen`` raised AttributeError)."""
    code = """
        import threading, sqreen
        sqreen.start()
        import flask
        app = flask.Flask("disabled")
        @app.get("/")
        def index():
            tracked = flask.request.sqreen.track("x")
            return repr((tracked, flask.request.sqreen.client_ip(), sqreen.track("y")))
        reply = app.test_client().get("/")
        print(reply.status_code, reply.get_data(as_text=True), threading.active_count())
        """
    proc = run_disabled(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "200 (False, None, False) 1", proc.stderr
    assert sorted(os.listdir(tmp_path)) == []
