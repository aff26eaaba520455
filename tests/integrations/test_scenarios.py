"""Every framework, through its test client and through real servers, end to end.

Events reach a real HTTP receiver (:class:`tests.receiver.Receiver`); blocks come back from it
in the action set of its replies. The same scenarios run against each :class:`Site`.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import pytest

from ._servers import Response, wait_until
from ._sites import Site

pytestmark = pytest.mark.slow

SECRET = "hunter2-secret"
UA = "sqreen-tests/1.0"


def marker() -> str:
    return uuid.uuid4().hex[:12]


def digest(body: bytes, name: str) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body), "name": name}


def only(events: list[Any]) -> Any:
    assert len(events) == 1, events
    return events[0]


# -- default properties ----------------------------------------------------------------------


def test_request_properties_and_the_identified_user(site: Site) -> None:
    m = marker()
    response = site.request(
        "GET",
        f"/identify?uid=u-{m}&marker={m}&page=2&password={SECRET}&as=other-{m}",
        headers={"User-Agent": UA, "X-Forwarded-For": "203.0.113.5"},
    )
    assert response.status == 200
    event = only(site.events("identified", marker=m))
    request = event["request"]
    # A real server's peer is untrusted here: its X-Forwarded-For must be ignored.
    assert request["ip"] == ("203.0.113.5" if site.trusts_loopback else "127.0.0.1")
    assert request["user_agent"] == UA
    assert request["path"] == "/identify"
    assert request["method"] == "GET"
    assert request["route"] == site.route("identify")
    assert request["params"]["page"] == "2" and request["params"]["marker"] == m
    assert request["params"]["password"] == "[redacted]"
    assert SECRET not in json.dumps(event)
    assert event["user"] == {"uid": f"u-{m}"}
    override = only([e for e in site.events("override") if e["request"]["params"]["marker"] == m])
    assert override["user"] == {"uid": f"other-{m}"}  # the event's own user wins


def test_a_non_ascii_path(site: Site) -> None:
    response = site.request("GET", "/echo/caf%C3%A9-%E2%82%AC?m=" + marker())
    assert response.json()["name"] == "café-€"
    event = only(site.events("echo", name="café-€"))
    assert event["request"]["path"] == "/echo/café-€"
    site.receiver.events.remove(event)  # the name is not unique: leave no trace for a rerun


@pytest.mark.parametrize("collect", [False, True])
def test_json_body(site: Site, collect: bool) -> None:
    m = marker()
    body = json.dumps({"username": "bob", "password": SECRET, "n": 1}).encode()
    query = "?collect=1" if collect else ""
    response = site.request(
        "POST", f"/echo/{m}{query}", body, headers={"Content-Type": "application/json"}
    )
    assert response.json() == digest(body, m)
    event = only(site.events("echo", name=m))
    request = event["request"]
    assert request["path"] == f"/echo/{m}"
    assert request["route"] == site.route("echo")
    assert request["method"] == "POST"
    assert {k: request["params"][k] for k in ("username", "password", "n")} == {
        "username": "bob",
        "password": "[redacted]",
        "n": 1,
    }
    assert SECRET not in json.dumps(event)
    if collect:
        assert json.loads(request["body"]["content"])["username"] == "bob"
        assert request["body"]["truncated"] is False
    else:
        assert request["body"] is None


@pytest.mark.parametrize("collect", [False, True])
def test_form_body(site: Site, collect: bool) -> None:
    m = marker()
    body = f"username=bob&password={SECRET}&remember=on".encode()
    response = site.request(
        "POST",
        f"/echo/{m}" + ("?collect=1" if collect else ""),
        body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.json() == digest(body, m)
    request = only(site.events("echo", name=m))["request"]
    assert request["params"]["username"] == "bob" and request["params"]["remember"] == "on"
    assert request["params"]["password"] == "[redacted]"
    assert (request["body"] is not None) is collect
    assert SECRET not in json.dumps(request)


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = "sqreen-" + marker()
    parts = []
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"{head}{value}\r\n".encode())
    for name, data in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"'
            f"\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_multipart_parsed_by_the_framework(site: Site) -> None:
    m = marker()
    upload = bytes(range(256)) * 40
    body, content_type = multipart({"username": m, "password": SECRET}, {"upload": upload})
    response = site.request("POST", "/form", body, headers={"Content-Type": content_type})
    assert response.json() == {
        "fields": {"username": m, "password": SECRET},
        "files": {"upload": len(upload)},
    }
    # Text fields as a urlencoded form's, scrubbed alike; a file's contents never (nor its
    # file name): one event per site.
    event = only(site.events("form"))
    assert SECRET not in json.dumps(event) and "upload.bin" not in json.dumps(event)
    assert event["request"]["params"] == {
        "username": m,
        "password": "[redacted]",
        "upload": "[multipart]",
    }


def test_multipart_collected_body_keeps_names_only(site: Site) -> None:
    m = marker()
    body, content_type = multipart({"username": "bob", "password": SECRET}, {"f": b"\x00\xff" * 50})
    response = site.request(
        "POST", f"/echo/{m}?collect=1", body, headers={"Content-Type": content_type}
    )
    assert response.json() == digest(body, m)
    request = only(site.events("echo", name=m))["request"]
    assert request["body"]["content"] == "[multipart: username, password, f]"
    assert SECRET not in json.dumps(request)


def test_chunked_upload(site: Site) -> None:
    if not site.server:
        pytest.skip("test clients send no Transfer-Encoding")
    if not site.chunked_uploads:
        pytest.skip(
            "Django's WSGI handler reads no body without Content-Length, with or without us"
        )
    m = marker()
    chunks = [b"username=bob&", f"password={SECRET}&".encode(), b"x=" + b"y" * 100_000]
    response = site.chunked(
        f"/echo/{m}", chunks, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.json() == digest(b"".join(chunks), m)
    request = only(site.events("echo", name=m))["request"]
    assert request["params"]["username"] == "bob"
    assert request["params"]["password"] == "[redacted]"


def test_a_body_larger_than_the_cap(site: Site) -> None:
    m = marker()
    body = (b"0123456789abcdef" * 4096) * 5  # 320 KiB, the cap is 64 KiB
    response = site.request(
        "PUT", f"/echo/{m}?collect=1", body, headers={"Content-Type": "text/plain"}
    )
    assert response.json() == digest(body, m)
    request = only(site.events("echo", name=m))["request"]
    assert request["body"]["truncated"] is True
    assert 0 < len(request["body"]["content"]) <= 64 * 1024


def test_tracking_before_the_body_is_read(site: Site) -> None:
    m = marker()
    body = f"username=bob&password={SECRET}".encode()
    response = site.request(
        "POST",
        f"/echo/{m}?early=1",
        body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.json() == digest(body, m)  # the tee did not take the app's bytes
    early = only(site.events("echo.early", name=m))["request"]
    assert early["params"] == {"early": "1"}  # nothing was read yet
    late = only(site.events("echo", name=m))["request"]
    assert late["params"]["username"] == "bob"


# -- isolation ---------------------------------------------------------------------------------


def test_requests_in_flight_together_never_mix(site: Site) -> None:
    if site.concurrency is None:
        pytest.skip("a sync worker serves one request at a time")
    run, n = marker(), 200
    paths = [f"{site.barrier_path}?uid=user-{i}&run={run}&n={n}" for i in range(n)]
    responses = site.concurrent(paths)
    assert [r.status for r in responses] == [200] * n
    assert [r.json()["uid"] for r in responses] == [f"user-{i}" for i in range(n)]
    events = site.events("isolation", count=n, run=run)
    assert len(events) == n
    for event in events:
        uid = event["properties"]["uid"]
        assert event["user"] == {"uid": uid}
        assert event["request"]["params"]["uid"] == uid
    assert sorted(e["properties"]["uid"] for e in events) == sorted(f"user-{i}" for i in range(n))


# -- blocking ----------------------------------------------------------------------------------


def test_a_blocked_user_is_refused_until_unblocked(site: Site) -> None:
    m = marker()
    mallory, alice = f"mallory-{m}", f"alice-{m}"
    assert site.request("GET", f"/guarded?uid={mallory}").status == 200
    site.receiver.block(
        [{"id": f"bu-{m}", "type": "block_user", "user": {"uid": mallory}, "expires_in": 300}]
    )
    try:
        # The handler wraps identify() in `except Exception:`: still a 403.
        assert wait_until(
            lambda: site.request("GET", f"/guarded?uid={mallory}").status == 403, 15.0
        )
        refused = site.request(
            "GET", f"/guarded?uid={mallory}&marker={m}", headers={"Accept": "application/json"}
        )
        assert refused.status == 403
        assert json.loads(refused.body)["error"] == "forbidden"
        assert site.request("GET", f"/identify?uid={mallory}").status == 403
        # Nor `except BaseException:`: the block was kept on the request, refused at its end.
        swallowed = site.request("GET", f"/guarded?uid={mallory}&broad=1&marker={m}-broad")
        assert swallowed.status == 403 and b"refused" in swallowed.body
        assert site.request("GET", f"/guarded?uid={alice}&broad=1").body == b"served"
        assert site.request("GET", f"/guarded?uid={alice}&marker={m}").body == b"served"
    finally:
        site.receiver.block([])
    assert wait_until(lambda: site.request("GET", f"/guarded?uid={mallory}").status == 200, 15.0)
    # The refused request never got past identify(): only alice's was tracked.
    guarded = site.events("guarded", marker=m)
    assert [e["user"] for e in guarded] == [{"uid": alice}]


def test_a_blocked_ip_is_refused_before_the_view_runs(site: Site) -> None:
    if site.trusts_loopback:  # a test client: the loopback peer forwards the client's IP
        blocked: dict[str, Any] = {"headers": {"X-Forwarded-For": "203.0.113.77"}}
        allowed: dict[str, Any] = {"headers": {"X-Forwarded-For": "198.51.100.1"}}
        cidr = "203.0.113.77/32"
    else:  # a real server, nobody trusted: the peer's own address
        blocked, allowed, cidr = {"source": "127.0.0.2"}, {"source": "127.0.0.1"}, "127.0.0.2/32"
    m = marker()
    site.receiver.block([{"id": f"bi-{m}", "type": "block_ip", "ip": cidr, "expires_in": 300}])
    try:
        assert wait_until(lambda: site.request("GET", "/count", **blocked).status == 403, 15.0)
        before = site.request("GET", "/count", **allowed).json()["count"]
        assert site.request("GET", "/count", **blocked).status == 403
        after = site.request("GET", "/count", **allowed).json()["count"]
        assert after == before + 1  # the refused request never reached the view
    finally:
        site.receiver.block([])
    assert wait_until(lambda: site.request("GET", "/count", **blocked).status == 200, 15.0)


def test_a_block_expires(site: Site) -> None:
    m = marker()
    uid = f"eve-{m}"
    start = time.monotonic()
    site.receiver.block(
        [{"id": f"be-{m}", "type": "block_user", "user": {"uid": uid}, "expires_in": 1.0}]
    )
    try:
        assert wait_until(lambda: site.request("GET", f"/guarded?uid={uid}").status == 403, 15.0)
        assert wait_until(lambda: site.request("GET", f"/guarded?uid={uid}").status == 200, 15.0)
        assert time.monotonic() - start >= 1.0
    finally:
        site.receiver.block([])


# -- bad input -----------------------------------------------------------------------------------


BAD_BODIES = [
    ("malformed json", "application/json", b'{"password": "x", "a": [1, 2'),
    ("json not utf-8", "application/json", b'{"a": "\xff\xfe"}'),
    ("form not utf-8", "application/x-www-form-urlencoded", b"a=%ff%fe&b=\xff\xfe&c=%zz&%=%"),
    ("multipart without boundary", "multipart/form-data", b'form-data; name="x'),
]


@pytest.mark.parametrize(
    ("case", "content_type", "body"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
def test_bad_bodies_never_change_the_response(
    site: Site, case: str, content_type: str, body: bytes
) -> None:
    m = marker()
    path = f"/echo/{m}?collect=1"
    response = site.request("POST", path, body, headers={"Content-Type": content_type})
    assert response.status == 200 and response.json() == digest(body, m), case
    _same_as_without_sqreen(site, response, "POST", path, body, {"Content-Type": content_type})
    assert site.events("echo", name=m)  # parsed on the flusher without harm


def test_bad_query_strings_never_change_the_response(site: Site) -> None:
    m = marker()
    # Many fields (under Django's own limit of 1000), long values: up to what the server takes.
    fields = min(900, site.max_query // 25)
    huge = "&".join(f"k{i}=" + "v" * (site.max_query // fields - 8) for i in range(fields))
    queries = [huge, "a=%zz&b=%E0%A4%A&%=x&c=%ff%fe&d=%", "q=%c3%28&password=%ff" + SECRET]
    for query in queries:
        path = f"/echo/{m}?{query}"
        response = site.request("GET", path, headers={"User-Agent": "caf\xe9"})
        assert response.status == 200 and response.json() == digest(b"", m)
        _same_as_without_sqreen(site, response, "GET", path, b"", {"User-Agent": "caf\xe9"})
    events = site.events("echo", count=len(queries), name=m)
    assert len(events) == len(queries)
    assert SECRET not in json.dumps(events)


def test_raw_non_utf8_bytes_on_a_real_server(site: Site) -> None:
    if not site.server:
        pytest.skip("test clients only build valid requests")
    m = marker()
    # Non-UTF-8 bytes in headers (obs-text) reach the app: it must answer as usual.
    response = site.raw(
        f"GET /echo/{m}?r=%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + b"User-Agent: \xe9\xff\r\nX-Forwarded-For: \xff\xfe, 1.2.3.4\r\n"
        + b"Content-Type: \xff/\xfe\r\nConnection: close\r\n\r\n"
    )
    assert response.status == 200 and response.json() == digest(b"", m)
    request = only(site.events("echo", name=m))["request"]
    assert request["path"] == f"/echo/{m}" and request["ip"] == "127.0.0.1"
    # In the request line the server may refuse them itself; if the app ran, it answered.
    n = marker()
    response = site.raw(
        f"GET /echo/{n}?q=".encode() + b"\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\n\r\n"
    )
    assert response.status in (200, 400), response
    if response.status == 200:
        assert response.json() == digest(b"", n)


def _same_as_without_sqreen(
    site: Site, response: Response, method: str, path: str, body: bytes, headers: dict[str, str]
) -> None:
    twin = site.bare(method, path, body, headers=headers)
    if twin is not None:
        assert (twin.status, twin.body) == (response.status, response.body)
