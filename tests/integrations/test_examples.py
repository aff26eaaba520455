"""The three examples, each started with its one command, against a real receiver."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.receiver import Receiver

from ._servers import ROOT, free_port, http_request, wait_for_port

pytestmark = pytest.mark.slow

COMMANDS = {
    "flask": ["examples/flask_app.py"],
    "fastapi": ["examples/fastapi_app.py"],
    "django": ["examples/django_app/manage.py", "runserver", "127.0.0.1:{port}", "--noreload"],
}


@pytest.fixture(params=sorted(COMMANDS))
def example(request: pytest.FixtureRequest, receiver: Receiver) -> Iterator[int]:
    pytest.importorskip(request.param)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    env.update(
        PORT=str(port),
        SQREEN_ENDPOINT=receiver.url,
        SQREEN_FLUSH_INTERVAL="0.2",
        SQREEN_HEARTBEAT_INTERVAL="0.2",
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    args = [a.format(port=port) for a in COMMANDS[request.param]]
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        if not wait_for_port(port, 30, proc):
            proc.kill()
            pytest.fail(f"{request.param} example did not start:\n{proc.communicate()[0].decode()}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def post(port: int, path: str, body: str, **headers: str) -> int:
    headers = {"Content-Type": "application/json", **headers}
    return http_request(port, "POST", path, body.encode(), headers).status


def test_signup_login_and_a_custom_event(example: int, receiver: Receiver) -> None:
    alice = '{"username": "alice", "password": "wonderland"}'
    assert http_request(example, "GET", "/").status == 200
    assert post(example, "/signup", alice) == 201
    assert post(example, "/login", alice) == 200
    assert post(example, "/login", '{"username": "alice", "password": "guess"}') == 401
    export_body = '{"report": "q3", "format": "csv"}'
    assert post(example, "/export", export_body, **{"X-User": "alice"}) == 202
    events = receiver.wait_for(4)
    by_name = {e["name"]: e for e in events}
    assert sorted(by_name) == [
        "auth.login.failure",
        "auth.login.success",
        "auth.signup",
        "data.export.requested",
    ]
    assert by_name["auth.login.success"]["user"] == {"username": "alice"}
    assert by_name["auth.login.failure"]["request"]["params"]["password"] == "[redacted]"
    export = by_name["data.export.requested"]
    assert export["properties"] == {"format": "csv"}
    assert export["target"] == {"id": "q3", "type": "report"}
    assert export["user"] == {"username": "alice"}
    assert export["request"]["path"] == "/export"

    receiver.block([{"id": "b1", "type": "block_user", "user": {"username": "alice"}}])
    deadline = time.monotonic() + 15
    while post(example, "/login", alice) != 403:
        assert time.monotonic() < deadline, "the block never reached the example"
        time.sleep(0.1)
