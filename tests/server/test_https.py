"""HTTPS: ``sqreen serve --ssl-certfile --ssl-keyfile`` end to end, with a CA the test makes
and the SDK told to trust it (``ca_bundle``, or ``SSL_CERT_FILE``); or terminated by a proxy
named with ``--forwarded-allow-ips``."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import pytest
from click.testing import CliRunner

import sqreen
from sqreen.server.cli import main
from sqreen.server.explorer import set_admin_password
from sqreen.server.storage import EventFilter, open_storage
from sqreen.transports import HTTPTransport, Reply

from .conftest import ServeProcess, add_key, envelope, wire_event

trustme = pytest.importorskip("trustme")

PROXY = "127.0.0.2"  # a loopback address of its own: Linux routes all of 127.0.0.0/8 locally


class Pki:
    def __init__(self, root: Path) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file, self.cert, self.key = root / "ca.pem", root / "cert.pem", root / "key.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_pem.write_to_path(str(self.key))
        for i, blob in enumerate(cert.cert_chain_pems):  # the certificate, then its chain
            blob.write_to_path(str(self.cert), append=i > 0)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def https_collector(
    tmp_path: Path, pki: Pki, serve: Callable[..., ServeProcess]
) -> tuple[ServeProcess, str]:
    """``sqreen serve`` over HTTPS with the test's certificate, and an ingest key's token."""
    db = str(tmp_path / "sqreen.db")
    token = add_key(db)
    tls = ("--ssl-certfile", str(pki.cert), "--ssl-keyfile", str(pki.key))
    return serve(db, None, *tls, verify=pki.client_context()), token


def test_the_sdk_sends_over_https_with_the_test_ca_and_every_event_is_stored_once(
    tmp_path: Path, pki: Pki, serve: Callable[..., ServeProcess]
) -> None:
    collector, token = https_collector(tmp_path, pki, serve)
    assert collector.url.startswith("https://127.0.0.1:")
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on the port
        httpx.get(collector.url.replace("https", "http") + "/livez", timeout=5)
    client = sqreen.init(
        endpoint=collector.url, token=token, ca_bundle=str(pki.ca_file), flush_interval=0.1
    )
    for n in range(50):
        sqreen.track("shop.order", properties={"n": n})
    assert sqreen.flush(timeout=15)
    assert client.stats()["sent"] == 50
    storage = open_storage(collector.db)
    try:
        stored = storage.query_events(EventFilter(name="shop.order"), limit=1000)
    finally:
        storage.close()
    assert sorted(e.properties["n"] for e in stored) == list(range(50))


def test_the_transport_checks_the_certificate_and_reads_ssl_cert_file(
    tmp_path: Path, pki: Pki, serve: Callable[..., ServeProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    collector, token = https_collector(tmp_path, pki, serve)

    def send() -> Reply:
        transport = HTTPTransport(collector.url, token)  # neither ca_bundle nor verify=False
        try:
            return transport.send(envelope([]), [json.dumps(wire_event()).encode()])
        finally:
            transport.close()

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    unknown = send()
    assert unknown.outcome == "retry" and "CERTIFICATE_VERIFY_FAILED" in unknown.detail
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    assert send().outcome == "ok"


def test_a_ca_bundle_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(sqreen.ConfigError, match="ca_bundle"):
        sqreen.init(endpoint="https://127.0.0.1:1", ca_bundle=str(tmp_path / "none.pem"))


@pytest.mark.parametrize("which", ["cert", "key"])
def test_serve_refuses_a_missing_certificate_or_key_naming_the_option(
    tmp_path: Path, pki: Pki, which: str
) -> None:
    missing = str(tmp_path / "nowhere.pem")
    cert, key = (missing, str(pki.key)) if which == "cert" else (str(pki.cert), missing)
    result = CliRunner().invoke(
        main,
        ["serve", "--db", str(tmp_path / "s.db"), "--ssl-certfile", cert, "--ssl-keyfile", key],
    )
    assert result.exit_code == 1
    assert f"--ssl-{which}file {missing}: No such file or directory" in result.output
    assert not (tmp_path / "s.db").exists()  # stopped before anything started


def test_serve_refuses_a_key_of_another_certificate(tmp_path: Path, pki: Pki) -> None:
    other = tmp_path / "other.pem"
    pki.ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other))
    result = CliRunner().invoke(
        main,
        [
            "serve",
            "--db",
            str(tmp_path / "s.db"),
            "--ssl-certfile",
            str(pki.cert),
            "--ssl-keyfile",
            str(other),
        ],
    )
    assert result.exit_code == 1
    assert "do not make a certificate with its key" in result.output


def test_serve_with_a_certificate_alone_says_the_key_is_missing(tmp_path: Path, pki: Pki) -> None:
    db = str(tmp_path / "s.db")
    result = CliRunner().invoke(main, ["serve", "--db", db, "--ssl-certfile", str(pki.cert)])
    assert result.exit_code == 1
    assert "holds no private key: give the key with --ssl-keyfile" in result.output


@pytest.mark.parametrize(
    ("value", "exit_code", "said"),
    [
        # uvicorn compares what is no network as text with the peer: no proxy believed.
        ("10.0.0.1/8", 2, "'10.0.0.1/8' is no network (10.0.0.1/8 has host bits set)"),
        ("127.0.0.1,10.0.0.0/33", 2, "'10.0.0.0/33' is no network"),
        ("proxy.internal", 1, "'proxy.internal' is no address: it matches only a peer named"),
        ("*", 1, "'*': any client can say it came over HTTPS"),
        ("*,10.0.0.1", 1, "'*' in a list matches no proxy (only '*' alone does)"),
    ],
)
def test_proxies_uvicorn_would_silently_never_believe_are_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, exit_code: int, said: str
) -> None:
    from sqreen.server import _cli_serve

    def started(*_: object) -> None:
        raise SystemExit(1)  # (the options were read: stop before serving)

    monkeypatch.setattr(_cli_serve, "check_listen", started)
    db = str(tmp_path / "s.db")
    result = CliRunner().invoke(main, ["serve", "--db", db, "--forwarded-allow-ips", value])
    assert result.exit_code == exit_code, result.output
    assert said in result.output


def test_forwarded_headers_are_believed_from_the_allowed_proxy_only(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """Behind a proxy that terminates HTTPS: its X-Forwarded-Proto makes the explorer's cookie
    Secure; the same header from another address (127.0.0.1, allowed by uvicorn's default)
    changes nothing once --forwarded-allow-ips names the proxy."""
    db = str(tmp_path / "sqreen.db")
    storage = open_storage(db)
    try:
        set_admin_password(storage, "a long enough password")
    finally:
        storage.close()
    collector = serve(db, None, "--forwarded-allow-ips", PROXY)

    def cookie_from(address: str) -> str:
        transport = httpx.HTTPTransport(local_address=address)
        with httpx.Client(transport=transport, timeout=10) as client:
            reply = client.get(
                collector.url + "/explorer/login", headers={"X-Forwarded-Proto": "https"}
            )
        return reply.headers["set-cookie"].lower()

    assert "; secure" in cookie_from(PROXY)
    assert "; secure" not in cookie_from("127.0.0.1")


def test_a_stale_ssl_cert_file_is_warned_about_and_stops_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "gone.pem"))
    HTTPTransport("http://127.0.0.1:1", None).close()  # plain HTTP never reads it
    assert "SSL_CERT_FILE" not in caplog.text
    assert HTTPTransport("https://127.0.0.1:1", None).verify is True  # the system's CAs
    assert "does not exist: the system's CAs are used" in caplog.text
