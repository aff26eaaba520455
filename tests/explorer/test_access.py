"""Who gets in: the login, the session cookie, CSRF on every form, the response headers."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from sqreen.server.auth import hash_token, new_token
from sqreen.server.explorer import _secrets, set_admin_password
from sqreen.server.explorer._guard import COOKIE
from sqreen.server.storage import Storage

from .conftest import PASSWORD, csrf_of, login, make_client, wire_event

PAGES = [
    "/explorer/",
    "/explorer/events",
    "/explorer/events?name=auth.login.failure&group=ip",
    "/explorer/events/ev-1",
    "/explorer/alerts",
    "/explorer/alerts?playbook=brute-force-ip&before=9",
    "/explorer/alerts/1",
    "/explorer/playbooks",
    "/explorer/blocks",
    "/explorer/agents",
    "/explorer/nowhere",
]
POSTS = ["/explorer/blocks", "/explorer/blocks/1/unblock", "/explorer/logout"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_the_login_without_a_session(anonymous: TestClient, path: str) -> None:
    reply = anonymous.get(path, follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"].startswith("/explorer/login")


def test_the_login_brings_back_to_the_page_asked_for(anonymous: TestClient) -> None:
    reply = anonymous.get("/explorer/events?name=auth.signup&ip=1.2.3.4", follow_redirects=False)
    assert reply.headers["location"] == (
        "/explorer/login?next=%2Fevents%3Fname%3Dauth.signup%26ip%3D1.2.3.4"
    )
    done = login(anonymous, next="/events?name=auth.signup&ip=1.2.3.4")
    assert done.headers["location"] == "/explorer/events?name=auth.signup&ip=1.2.3.4"


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil", ""])
def test_the_login_never_redirects_off_site(anonymous: TestClient, target: str) -> None:
    assert login(anonymous, next=target).headers["location"] == "/explorer/events"


@pytest.mark.parametrize("path", ["/explorer/api/events", "/explorer/api/events?after=3"])
def test_the_api_answers_401_without_a_session(anonymous: TestClient, path: str) -> None:
    reply = anonymous.get(path)
    assert reply.status_code == 401
    assert reply.json()["error"].startswith("login required")


@pytest.mark.parametrize("path", POSTS)
def test_posts_without_a_session_go_to_the_login(anonymous: TestClient, path: str) -> None:
    reply = anonymous.post(path, data={"csrf_token": "x"}, follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"].startswith("/explorer/login")


@pytest.mark.parametrize("path", POSTS)
def test_forms_posted_without_their_csrf_token_are_refused(client: TestClient, path: str) -> None:
    assert client.post(path, data={"kind": "ip", "ip": "1.2.3.4"}).status_code == 403
    assert client.post(path, data={"csrf_token": "forged" * 8}).status_code == 403
    # Nothing happened: still logged in, nothing blocked.
    assert client.get("/explorer/events").status_code == 200


def test_the_login_form_needs_its_csrf_token_too(anonymous: TestClient) -> None:
    reply = anonymous.post("/explorer/login", data={"password": PASSWORD})
    assert reply.status_code == 403
    assert anonymous.get("/explorer/events", follow_redirects=False).status_code == 303


def test_forms_posted_from_another_site_are_refused(client: TestClient) -> None:
    token = csrf_of(client, "/explorer/blocks")
    form = {"csrf_token": token, "kind": "ip", "ip": "192.0.2.1", "duration": "1h"}
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
    ):
        reply = client.post("/explorer/blocks", data=form, headers=headers)
        assert reply.status_code == 403, headers
        assert "another site" in reply.text
    ok = client.post("/explorer/blocks", data=form, headers={"Origin": "http://testserver"})
    assert ok.status_code == 200 and "Block #1 created" in ok.text


def test_a_wrong_password_is_refused_and_repeated_failures_are_throttled(
    anonymous: TestClient,
) -> None:
    for _ in range(10):
        assert login(anonymous, "not the password").status_code == 401
    throttled = login(anonymous, PASSWORD, check=False)
    assert throttled.status_code == 429
    assert "Too many failed logins" in throttled.text
    assert anonymous.get("/explorer/events", follow_redirects=False).status_code == 303


def test_no_password_configured_means_nobody_logs_in(storage: Storage) -> None:
    with make_client(storage) as anonymous:
        page = anonymous.get("/explorer/login")
        assert "No admin password is set" in page.text
        assert "sqreen admin-password" in page.text
        assert "<fieldset disabled>" in page.text
        for password in ("", "admin", PASSWORD):
            reply = login(anonymous, password, check=False)
            assert reply.status_code == 403
        assert anonymous.get("/explorer/events", follow_redirects=False).status_code == 303


def test_the_session_cookie_is_httponly_samesite_and_scoped(anonymous: TestClient) -> None:
    reply = login(anonymous)
    cookie = reply.headers["set-cookie"].lower()
    assert cookie.startswith(COOKIE + "=")
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/explorer" in cookie
    assert "max-age=43200" in cookie
    assert "secure" not in cookie  # plain HTTP: a Secure cookie would never come back


def test_the_session_cookie_is_secure_over_https(storage: Storage) -> None:
    set_admin_password(storage, PASSWORD)
    client = TestClient(make_client(storage).app, base_url="https://testserver")
    with client:
        assert "; secure" in login(client).headers["set-cookie"].lower()


def test_logging_out_ends_the_session(client: TestClient) -> None:
    token = csrf_of(client, "/explorer/events")
    reply = client.post("/explorer/logout", data={"csrf_token": token}, follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/explorer/login"
    assert client.get("/explorer/events", follow_redirects=False).status_code == 303
    assert client.get("/explorer/api/events").status_code == 401


def test_a_new_password_ends_the_sessions_opened_with_the_old_one(
    storage: Storage, client: TestClient
) -> None:
    cookie = client.cookies.get(COOKIE)
    set_admin_password(storage, "a brand new password")
    with make_client(storage) as other:  # another process's app on the same database
        other.cookies.set(COOKIE, cookie, path="/explorer")
        assert other.get("/explorer/events", follow_redirects=False).status_code == 303


def test_sessions_expire(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    set_admin_password(storage, PASSWORD)
    with make_client(storage) as client:
        login(client)
        assert client.get("/explorer/events").status_code == 200
        later = time.time() + 12 * 3600 + 1
        monkeypatch.setattr(time, "time", lambda: later)
        assert client.get("/explorer/events", follow_redirects=False).status_code == 303


def test_a_session_is_valid_in_another_collector_process_on_the_same_database(
    storage: Storage, client: TestClient
) -> None:
    with make_client(storage) as second:  # another app: the session key comes from storage
        second.cookies.set(COOKIE, client.cookies.get(COOKIE), path="/explorer")
        assert second.get("/explorer/events").status_code == 200


def test_a_forged_cookie_is_ignored(anonymous: TestClient) -> None:
    anonymous.cookies.set(COOKIE, "eyJ1c2VyIjogImFkbWluIn0=.forged.sig", path="/explorer")
    assert anonymous.get("/explorer/events", follow_redirects=False).status_code == 303


def test_the_session_key_can_come_from_the_environment(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQREEN_SECRET_KEY", "k" * 40)
    assert _secrets.session_secret(storage) == "k" * 40
    monkeypatch.setenv("SQREEN_SECRET_KEY", "short")
    with pytest.raises(ValueError, match="at least 32"):
        _secrets.session_secret(storage)


def test_pages_carry_security_headers(client: TestClient) -> None:
    for path in ("/explorer/events", "/explorer/login", "/explorer/static/explorer.css"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
    assert client.get("/explorer/events").headers["cache-control"] == "no-store"


def test_the_ingest_api_keeps_its_bearer_tokens(storage: Storage, client: TestClient) -> None:
    token = new_token()
    storage.create_key("sdk", hash_token(token))
    body = {"sdk": {"name": "t"}, "app": {"name": "shop"}, "events": [wire_event()]}
    assert client.post("/v1/events", json=body).status_code == 401  # a session is no key
    ok = client.post("/v1/events", json=body, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json()["accepted"] == 1


def test_static_files_are_public_and_served_from_the_package(anonymous: TestClient) -> None:
    script = anonymous.get("/explorer/static/explorer.js")
    assert script.status_code == 200 and "textContent" in script.text
    assert "innerHTML" not in script.text.split("\n", 3)[-1]
    for path in ("/explorer/static/../_secrets.py", "/explorer/static/%2e%2e/_secrets.py"):
        reply = anonymous.get(path, follow_redirects=False)
        assert reply.status_code in (303, 404) and "scrypt" not in reply.text


def test_the_root_leads_to_the_explorer(anonymous: TestClient) -> None:
    reply = anonymous.get("/", follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/explorer/"


def test_verify_password_rejects_malformed_hashes() -> None:
    stored = _secrets.hash_password("a good password")
    assert _secrets.verify_password("a good password", stored)
    assert not _secrets.verify_password("a good passwore", stored)
    for bad in ("", "plain", "scrypt$99$8$1$AA==$AA==", "md5$1$2$3$4$5", stored[:-4] + "!!!!"):
        assert not _secrets.verify_password("a good password", bad)
    with pytest.raises(ValueError, match="at least 8"):
        _secrets.check_new_password("short")


@pytest.mark.parametrize(
    ("env", "base_url", "flags"),
    [
        ({"SQREEN_SECURE_COOKIE": "1"}, "http://testserver", ["; secure", "samesite=lax"]),
        ({"SQREEN_SECURE_COOKIE": "0"}, "https://testserver", ["samesite=lax"]),
        ({"SQREEN_COOKIE_SAMESITE": "strict"}, "http://testserver", ["samesite=strict"]),
    ],
)
def test_cookie_options_from_the_environment(
    storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    base_url: str,
    flags: list[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    set_admin_password(storage, PASSWORD)
    with TestClient(make_client(storage).app, base_url=base_url) as client:
        # The login page's session (its CSRF token): a Secure cookie never comes back over
        # plain HTTP, which is why Secure follows the request's scheme by default.
        cookie = client.get("/explorer/login").headers["set-cookie"].lower()
    assert all(flag in cookie for flag in flags)
    assert ("; secure" in cookie) == ("; secure" in flags)


def test_bad_cookie_options_stop_the_collector_at_start(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQREEN_COOKIE_SAMESITE", "none")
    with pytest.raises(ValueError, match="lax or strict"):
        make_client(storage)
