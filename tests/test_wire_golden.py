"""The exact wire form, byte for byte, of a corpus of requests: what the flusher's faster
parsing and scrubbing must leave unchanged.

Each case of ``tests/data/wire_corpus.json`` is a request (WSGI or ASGI: method, path, query,
headers, body, route) and an event tracked in it; it goes through the real path: a bound
:class:`RequestContext`, ``track()`` (which snapshots the request), the queue, and the
flusher's encoding (client IP, query and body parsing, scrubbing, JSON) into the bytes the
transport is handed. ``tests/data/wire_golden.jsonl`` holds those bytes as the code of
2026-12 wrote them, one line per case; times and ids are pinned (``timestamp=`` and the id
prefix). The corpus reuses ``tests/test_scrub_corpus.py``'s secrets and neighbours.

To record again after a change *meant* to change the wire form (review the diff):

    .venv/bin/python -m tests.test_wire_golden --record
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

import sqreen
from sqreen._context import RequestContext, current_request
from sqreen._json import use_speedups
from sqreen.transports.base import NullTransport, Reply

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "wire_corpus.json"
GOLDEN = DATA / "wire_golden.jsonl"
LONG = 16 * 1024
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


class Recorder(NullTransport):
    """A transport that keeps the exact bytes of every event it is handed."""

    def __init__(self) -> None:
        self.events: list[bytes] = []

    def send(
        self, envelope: dict[str, Any], events: list[bytes], timeout: float | None = None
    ) -> Reply:
        self.events.extend(events)
        return Reply("ok")


class Body:
    def __init__(self, data: bytes, truncated: bool) -> None:
        # Two chunks, as the tee keeps them when the app reads in parts.
        self.chunks = (data[: len(data) // 2], data[len(data) // 2 :]) if data else ()
        self.truncated = truncated

    def capture(self) -> tuple[tuple[bytes, ...], bool]:
        return self.chunks, self.truncated


def _context(client: sqreen.Client, case: dict[str, Any]) -> RequestContext:
    query = case.get("query", "")
    if "query_parts" in case:  # [[text, times], ...]: a long query, kept short in the file
        query = "".join(part * times for part, times in case["query_parts"])
    raw_query = query.encode("utf-8")
    path = case.get("path", "/")
    headers: dict[str, str] = case.get("headers", {})
    body = Body(
        bytes.fromhex(case["body_hex"])
        if "body_hex" in case
        else case.get("body", "").encode("utf-8"),
        case.get("truncated", False),
    )
    route = case.get("route")
    getter = None if route is None else (lambda: (route, case.get("path_params")))
    if case["kind"] == "wsgi":
        environ: dict[str, Any] = {
            "REQUEST_METHOD": case.get("method", "POST"),
            "SCRIPT_NAME": "",
            # PEP 3333: the bytes of the path and query, decoded as latin-1.
            "PATH_INFO": path.encode("utf-8").decode("latin-1"),
            "QUERY_STRING": raw_query.decode("latin-1"),
            "REMOTE_ADDR": case.get("peer", "127.0.0.1"),
        }
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            if key != "CONTENT_TYPE":
                key = "HTTP_" + key
            environ[key] = value.encode("utf-8").decode("latin-1")
        return RequestContext(client, "wsgi", environ, body=body, route=getter)
    scope = {
        "type": "http",
        "method": case.get("method", "POST"),
        "path": path,
        "query_string": raw_query,
        "headers": [(k.lower().encode(), v.encode("utf-8")) for k, v in headers.items()],
        "client": (case.get("peer", "127.0.0.1"), 50000),
    }
    return RequestContext(client, "asgi", scope, body=body, route=getter)


def encode_corpus(cases: list[dict[str, Any]], monkeypatch: Any) -> list[bytes]:
    """The wire bytes of every case, through track(), the queue and the flusher."""
    monkeypatch.setattr("sqreen._client.new_id_prefix", lambda: "golden")
    recorder = Recorder()
    client = sqreen.init(transport=recorder, max_body_size=1 << 20)  # type: ignore[arg-type]
    for case in cases:
        ctx = None if case["kind"] == "none" else _context(client, case)
        token = current_request.set(ctx)
        try:
            assert client.track(
                case.get("name", "auth.login.failure"),
                properties=case.get("properties"),
                user_identifiers=case.get("user"),
                timestamp=WHEN,
                collect_body=case.get("collect_body", False),
            )
        finally:
            current_request.reset(token)
    assert client.flush(timeout=10)
    assert len(recorder.events) == len(cases)
    return recorder.events


@pytest.mark.parametrize("speedups", [True, False], ids=["msgspec", "pure-python"])
def test_the_wire_form_is_unchanged_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch, speedups: bool
) -> None:
    """The same bytes with the ``speedups`` extra's C encoder and without it."""
    cases = json.loads(CORPUS.read_text("utf-8"))
    golden = GOLDEN.read_bytes().split(b"\n")[:-1]
    assert len(golden) == len(cases)
    previous = use_speedups(speedups)
    try:
        encoded = encode_corpus(cases, monkeypatch)
    finally:
        use_speedups(previous)
    for case, got, want in zip(cases, encoded, golden, strict=True):
        assert _line(got) == want, case["case"]


def _line(data: bytes) -> bytes:
    """The golden line of ``data``: itself, or for the few cut to 256 KiB, its SHA-256 and
    length (as exact a comparison, without half a megabyte of golden file)."""
    if len(data) <= LONG:
        return data
    return f"sha256:{hashlib.sha256(data).hexdigest()} {len(data)}".encode()


# -- the corpus, as it was built (kept for --record) ------------------------------------------


def build_corpus() -> list[dict[str, Any]]:
    from tests import test_scrub_corpus as sc

    cases: list[dict[str, Any]] = []

    def add(case: str, **fields: Any) -> None:
        for kind in ("wsgi", "asgi"):
            cases.append({"case": f"{case} ({kind})", "kind": kind, **fields})

    form = "application/x-www-form-urlencoded"
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"}
    add(
        "login form",
        path="/login",
        query="next=%2Fhome&lang=en",
        collect_body=True,
        body="username=alice&password=hunter2&remember=on",
        headers={**browser, "X-Forwarded-For": "203.0.113.7", "Content-Type": form},
        properties={"reason": "bad_password", "attempt": 3, "remember": True},
        user={"email": "alice@example.com"},
    )
    add(
        "json login",
        path="/api/login",
        collect_body=True,
        body=json.dumps(
            {
                "email": "bob@example.com",
                "password": "pw",
                "otp": 123456,
                "card": 4111111111111111,
                "profile": {"apiKey": "k", "n": [1, 2.5]},
            }
        ),
        headers={**browser, "Content-Type": "application/json; charset=utf-8"},
        properties={"reason": "bad_otp"},
    )
    add(
        "multipart",
        path="/upload",
        collect_body=True,
        body='--b\r\nContent-Disposition: form-data; name="user"\r\n\r\nalice\r\n--b\r\n'
        'Content-Disposition: form-data; name="password"\r\n\r\nhunter2\r\n--b--\r\n',
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    add(
        "text body",
        path="/note",
        collect_body=True,
        body="token=abc123\nnote: 4111 1111 1111 1111",
        headers={"Content-Type": "text/plain"},
    )
    add(
        "truncated json",
        collect_body=True,
        body='{"password": "hunter2", "user": "al',
        truncated=True,
        headers={"Content-Type": "application/json"},
    )
    add(
        "latin-1 form",
        collect_body=True,
        body_hex="757365723d63e9636c6521",
        headers={"Content-Type": form},
    )
    add(
        "query odds",
        method="GET",
        query="a=1&a=2&a=3&b=&c&=v&d=%ZZ&e=caf%C3%A9&f=x+y&g=%2B&h=1;i=2&password=p&j=%E9",
        headers={"User-Agent": "curl/8"},
    )
    add("repeated keys", method="GET", query="&".join(f"k{i % 70}=v{i}" for i in range(300)))
    add("non-ascii path", method="GET", path="/café/ünïcode", query="q=日本語&x=%F0%9F%98%80")
    add(
        "route params",
        method="GET",
        path="/reset/abc123/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
        route="/reset/<token>/<jwt>",
        path_params={"token": "abc123", "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"},
    )
    add("untrusted peer", peer="198.51.100.4", headers={"X-Forwarded-For": "6.6.6.6"})
    add("proxy chain", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 127.0.0.1"})
    add("ipv6 peer", peer="::1", headers={"X-Forwarded-For": "[2001:db8::1]:4711"})
    add("long user agent", headers={"User-Agent": "U" * 3000})
    add("huge query", method="GET", query_parts=[["big=", 1], ["x", 300_000], ["&small=1", 1]])
    add(
        "wide query",
        method="GET",
        query_parts=[part for i in range(70) for part in ([f"p{i}=", 1], ["%01", 4000], ["&", 1])],
    )
    add(
        "json array body",
        collect_body=True,
        body='[["password", "s"], {"name": "pin"}]',
        headers={"Content-Type": "application/json"},
    )
    add(
        "lone surrogate json",
        collect_body=True,
        body='{"note": "\\ud800 x"}',
        headers={"Content-Type": "application/vnd.api+json"},
    )
    add(
        "form fields",
        query=sc.FORM_FIELDS,
        body=sc.FORM_FIELDS,
        collect_body=True,
        headers={"Content-Type": form},
    )

    secrets = {key: f"kv{i:02d}-Zq-hush" for i, key in enumerate(sc.SECRET_KEYS)}
    neighbours = {key: f"n-{key}-ok" for key in sc.NEIGHBOUR_KEYS}
    data = {**secrets, **neighbours}
    add("secret keys, query", query=urlencode(data))
    add(
        "secret keys, form", body=urlencode(data), collect_body=True, headers={"Content-Type": form}
    )
    add(
        "secret keys, json",
        body=json.dumps({"account": data}),
        collect_body=True,
        headers={"Content-Type": "application/json"},
    )
    add(
        "secret keys, text",
        body="\n".join(f"{k}={v}" for k, v in data.items()),
        collect_body=True,
        headers={"Content-Type": "text/plain"},
    )
    props = {key: f"n-{key}-ok" for key in sc.PROPERTY_NEIGHBOUR_KEYS}
    for key, value in secrets.items():
        cases.append(
            {"case": f"secret property {key}", "kind": "none", "properties": {key: value, **props}}
        )
    for i, secret in enumerate(sc.VALUE_SECRETS):
        inside = f"paid with {secret} today"
        add(f"secret value {i}, query", query=urlencode({"note": secret, "memo": inside}))
        add(
            f"secret value {i}, form",
            body=urlencode({"note": secret, "memo": inside}),
            collect_body=True,
            headers={"Content-Type": form},
        )
        add(
            f"secret value {i}, json",
            body=json.dumps({"note": secret, "list": [inside]}),
            collect_body=True,
            headers={"Content-Type": "application/json"},
        )
        add(
            f"secret value {i}, text",
            body=f"note: {inside}\n",
            collect_body=True,
            headers={"Content-Type": "text/plain"},
        )
        cases.append(
            {
                "case": f"secret value {i}, properties",
                "kind": "none",
                "properties": {"note": secret, "memo": inside, "nested": {"x": [inside]}},
            }
        )
    values = {f"v{i:02d}": value for i, value in enumerate(sc.NEIGHBOUR_VALUES)}
    add("neighbour values, query", query=urlencode(values), properties=values)
    add(
        "neighbour values, json",
        body=json.dumps(values),
        collect_body=True,
        headers={"Content-Type": "application/json"},
    )
    add(
        "neighbour values, text",
        body="\n".join(values.values()),
        collect_body=True,
        headers={"Content-Type": "text/plain"},
    )
    for i, structure in enumerate(sc.STRUCTURES):
        both = {**structure, "neighbours": sc.STRUCTURE_NEIGHBOURS}
        add(
            f"structure {i}",
            body=json.dumps(both),
            collect_body=True,
            properties=both,
            headers={"Content-Type": "application/json"},
        )
    return cases


def record() -> None:
    cases = build_corpus()
    DATA.mkdir(exist_ok=True)
    CORPUS.write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n", "utf-8")
    with pytest.MonkeyPatch.context() as monkeypatch:
        encoded = encode_corpus(cases, monkeypatch)
    sqreen.shutdown(timeout=1)
    GOLDEN.write_bytes(b"".join(_line(line) + b"\n" for line in encoded))
    print(f"recorded {len(cases)} cases in {CORPUS} and {GOLDEN}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    record()
