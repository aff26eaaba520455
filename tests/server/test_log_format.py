"""``--log-format json`` (SQREEN_LOG_FORMAT): every line the collector writes is one JSON
object, its access lines carry the request id; a hostile ``X-Request-ID`` is replaced."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from sqreen.server.app import create_app
from sqreen.server.explorer import set_admin_password
from sqreen.server.logs import REQUEST_ID, JsonFormatter
from sqreen.server.storage import Storage, open_storage
from tests.server.conftest import ServeProcess, add_key, envelope, wire_event

GENERATED = re.compile(r"[0-9a-f]{32}")
HOSTILE = ["x" * 10_000, "a b", 'q"uote', "tab\there", ""]


@pytest.mark.slow
def test_json_lines_with_request_ids(
    tmp_path: Path, serve: Callable[..., ServeProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "sqreen.db")
    token = add_key(db)
    storage = open_storage(db)
    set_admin_password(storage, "a long enough passphrase")
    storage.close()
    log = tmp_path / "serve.log"
    monkeypatch.setenv("SQREEN_LOG_FORMAT", "json")
    proc = serve(db, None, "--access-log", "--log-level", "info", log=log)
    sane = "req-7f3a.b2:c;d=e+f/g@h"
    reply = httpx.post(
        proc.url + "/v1/events",
        json=envelope([wire_event()]),
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": sane},
    )
    assert reply.status_code == 200
    assert reply.headers["x-request-id"] == sane
    replaced = []
    for hostile in HOSTILE:
        reply = httpx.get(proc.url + "/livez", headers={"X-Request-ID": hostile})
        assert reply.status_code == 200
        assert GENERATED.fullmatch(reply.headers["x-request-id"]), hostile[:20]
        replaced.append(reply.headers["x-request-id"])
    refused = httpx.post(proc.url + "/v1/events", content=b"{}", headers={"X-Request-ID": "r-1"})
    assert (refused.status_code, refused.headers["x-request-id"]) == (401, "r-1")
    proc.stop()

    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one object
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access", "sqreen.server"} <= loggers
    (where,) = [line for line in lines if line["message"].startswith("Event Explorer: ")]
    assert where["level"] == "info"  # information, not a warning
    access = {line.get("request_id"): line for line in lines if line["logger"] == "uvicorn.access"}
    assert access[sane]["method"] == "POST"
    assert (access[sane]["path"], access[sane]["status"]) == ("/v1/events", 200)
    assert access["r-1"]["status"] == 401
    assert all(access[rid]["path"] == "/livez" for rid in replaced)
    assert "xxxxxxxxxx" not in text and 'q\\"uote' not in text and "a b" not in text


def test_a_500_carries_the_request_id(sqlite_storage: Storage) -> None:
    """Starlette answers a 500 outside its middleware: the id is given outside that."""

    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    app = create_app(sqlite_storage, routes=[Route("/boom", boom)], explorer=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        reply = client.get("/boom", headers={"X-Request-ID": "r-500"})
    assert (reply.status_code, reply.headers["x-request-id"]) == (500, "r-500")


def test_json_formatter_carries_the_request_id_and_the_traceback() -> None:
    record = logging.LogRecord("sqreen.server", logging.ERROR, __file__, 1, "failed %d", (7,), None)
    try:
        raise ValueError("boom")
    except ValueError as exc:
        record.exc_info = (ValueError, exc, exc.__traceback__)
    token = REQUEST_ID.set("abc")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        REQUEST_ID.reset(token)
    assert (line["level"], line["message"], line["request_id"]) == ("error", "failed 7", "abc")
    assert "ValueError: boom" in line["exception"]
    assert "request_id" not in json.loads(JsonFormatter().format(record))


def test_a_json_line_stays_one_line_of_ascii_whatever_the_message() -> None:
    """A message quoting a client (a request path, an endpoint's error) can hold what other
    splitters take for a line end (NEL, U+2028, U+2029, a file separator), terminal escapes,
    bidirectional overrides or a lone surrogate: the line is still one line, ASCII, and
    gives the message back."""
    message = "path /a\x85b\u2028c\u2029d\x1ce\x1b[2Jf\u202eg\ud800h é"
    record = logging.LogRecord("sqreen", logging.WARNING, __file__, 1, "%s", (message,), None)
    line = JsonFormatter().format(record)
    assert line.isascii() and len(line.splitlines()) == 1
    assert json.loads(line)["message"] == message
    line.encode("utf-8")  # a lone surrogate written raw could not be
