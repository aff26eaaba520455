"""What leaves the process: secrets an attacker found stored in clear, and their neighbours.

Each case is sent the way an app sends it (a request through the WSGI middleware, its query
string, its form, JSON or text body, and the event's own properties), delivered through
``transport="memory:"``, and looked for in the JSON of every delivered event: a secret must
never appear there, and a harmless neighbour must come out as it went in.

Tokens are assembled at run time so that no secret scanner mistakes this file for a leak.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from werkzeug.test import Client

import sqreen
from sqreen._scrub import REDACTED
from sqreen.middleware.wsgi import SqreenWSGIMiddleware

# -- keys ---------------------------------------------------------------------------------------

#: Keys whose values are secrets, under both key rules (request data and properties).
SECRET_KEYS = [
    "pw",
    "pswd",
    "passcode",
    "security_code",
    "csc",
    "card_code",
    "mfa_code",
    "otp",
    "verification_code",
    "recovery_code",
    "access_key",
    "aws_access_key_id",
    "mnemonic",
    "passwort",
    "contraseña",
    "Contraseña",
    "mot_de_passe",
    "PassWord",
    "API_KEY",
    "Mfa-Code",
]
#: Keys that stay readable everywhere.
NEIGHBOUR_KEYS = [
    "pwned_count",
    "passage",
    "compass",
    "api_version",
    "access_level",
    "skill_level",
    "basic_plan",
    "github_username",
    "user_id",
    "card_last4",
]
#: Keys that stay readable as an event's own properties (the lenient, whole-key rule); in
#: request data the strict token rule redacts them (accepted over-scrubbing).
PROPERTY_NEIGHBOUR_KEYS = [
    "otp_method",
    "auth_method",
    "token_type",
    "failed_password_attempts",
    "session_length",
    "max_tokens",
    "pin_attempts",
]

# -- values -------------------------------------------------------------------------------------

#: ASCII digits, dashes and spaces to their fullwidth forms (as a Japanese keyboard types them).
FULLWIDTH = {**{ord(d): 0xFF10 + int(d) for d in "0123456789"}, ord("-"): 0xFF0D, ord(" "): 0x3000}
CARDS = [
    "4111.1111.1111.1111",
    "4111/1111/1111/1111",
    "5500.0000.0000.0004",
    "3782/822463/10005",
    "4111 1111 1111 1111".translate(FULLWIDTH),
    "4111111111111111".translate(FULLWIDTH),
    "5500-0000-0000-0004".translate(FULLWIDTH),
]
_B64 = "MIIEowIBAAKCAQEAx4Z2y1b9Qm0vT3Zk8rW6hJpN5sLdE2cFgYuIoP7aBqRtVwXy"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join([_B64, _B64[::-1], _B64.lower()]) + "\n"
    "-----END RSA PRIVATE KEY-----"
)
OPENSSH = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n" + _B64.upper() + "\n-----END OPENSSH PRIVATE KEY-----"
)
TOKENS = [
    "AKIA" + "IOSFODNN7EXAMPLE",
    "ASIA" + "Y34FZKBOKMUTVV7A",
    "ghp_" + "A1b2C3d4" * 4 + "E5f6",
    "gho_" + "x9Y8w7V6" * 5,
    "ghu_" + "Q" * 36,
    "ghs_" + "0a1B" * 9,
    "ghr_" + "Zz09" * 10,
    "github_pat_" + "11ABCDEFG0123456789abc_" + "d4E5f6G7h8" * 6,
    "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "sk_test_" + "51H8xAbCdEfGhIjKlMnOpQr",
    "rk_live_" + "51H8xZyXwVuTsRqPoNmLk",
    "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "xoxp-" + "98765432109-98765432109-987654321098-0123456789abcdef0123456789abcdef",
    "xoxa-" + "2-112233445566-778899001122-aBcDeFgHiJkLmNoP",
]
BASIC = "dXNlcjpodW50ZXIyLWJhc2lj"  # user:hunter2-basic
#: Strings that hold a secret, each as a whole string and inside text.
VALUE_SECRETS = [*CARDS, *TOKENS, PEM, OPENSSH, f"Basic {BASIC}"]
#: What must not appear anywhere, for each of VALUE_SECRETS.
NEEDLES = {
    **{c: c for c in CARDS},
    **{t: t for t in TOKENS},
    PEM: _B64,
    OPENSSH: _B64.upper(),
    f"Basic {BASIC}": BASIC,
}

NEIGHBOUR_VALUES = [
    "1732270000000",  # a millisecond timestamp
    "2024-01-01T12:00:00.123456Z",
    "2024.01.01 12:00",
    "2024/01/01 2024/01/02",
    "1732270000.123456",
    "0.30000000000000004",  # a float written out
    "5.123456789012345",
    "45.123456789012345, 4.111111111111111",
    "123e4567-e89b-12d3-a456-426614174000",  # a UUID
    "+1 415.555.0100",  # phone numbers
    "415.555.0100",
    "+44 20 7946 0958",
    "ORD-2023-0001",  # order ids
    "4000123456",
    "203.0.113.9 198.51.100.7 45.33.32.156",  # addresses
    "v1.2.3",
    "4111.1111.1111.1112",  # a Visa prefix failing Luhn
    "4111 1111 1111 1112".translate(FULLWIDTH),
    "Basic plan",
    "basic_plan",
    "Basic Plan upgrade",
    "Asia/Tokyo",
    "AKIA docs",
    "sk_live",
    "skill_level",
    "github_username",
    "https://github.com/alice",
    "xoxo, gossip girl",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYI\n-----END PUBLIC KEY-----",
]

# -- structures that carry a secret's name in a value -------------------------------------------

STRUCTURES = [
    {"fields": [{"name": "password", "value": "named-secret-1"}]},
    {"fields": [{"key": "api_key", "value": "named-secret-2"}]},
    {"fields": [{"field": "otp", "value": "named-secret-3"}]},
    {"pairs": [["password", "named-secret-4"], ["theme", "dark"]]},
]
STRUCTURE_SECRETS = [f"named-secret-{i}" for i in range(1, 5)]
STRUCTURE_NEIGHBOURS = {
    "fields": [{"name": "theme", "value": "dark"}, {"key": "otp_method", "value": "sms"}],
    "pairs": [["theme", "dark"], ["otp_method", "sms"]],
}
FORM_FIELDS = (
    "fields[0][name]=password&fields[0][value]=named-secret-5"
    "&fields[1][name]=theme&fields[1][value]=dark"
)


# -- sending ------------------------------------------------------------------------------------


def _app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    environ["wsgi.input"].read()  # the tee keeps what the app reads
    properties = json.loads(environ.get("HTTP_X_PROPERTIES", "{}"))
    sqreen.track("corpus", properties=properties, collect_body=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"ok"])


class Sender:
    def __init__(self) -> None:
        self.client = sqreen.init(transport="memory:", max_body_size=1 << 20)
        self.http = Client(SqreenWSGIMiddleware(_app))  # type: ignore[arg-type]

    def send(
        self,
        query: str = "",
        body: str | None = None,
        content_type: str | None = None,
        properties: dict[str, Any] | None = None,
    ) -> None:
        headers = {"X-Properties": json.dumps(properties or {})}
        response = self.http.post(
            "/corpus",
            query_string=query,
            data=None if body is None else body.encode("utf-8"),
            content_type=content_type,
            headers=headers,
        )
        assert response.status_code == 200

    def delivered(self) -> list[dict[str, Any]]:
        assert sqreen.flush(timeout=10)
        events: list[dict[str, Any]] = self.client.transport.events  # type: ignore[attr-defined]
        return [e for e in events if e["name"] == "corpus"]


def _all_text(events: list[dict[str, Any]]) -> str:
    return "\n".join(
        json.dumps(e, ensure_ascii=False) + json.dumps(e, ensure_ascii=True) for e in events
    )


@pytest.fixture
def sender() -> Sender:
    return Sender()


# -- the corpus ---------------------------------------------------------------------------------


def test_secret_keys_never_leave_and_neighbour_keys_stay(sender: Sender) -> None:
    secrets = {key: f"kv{i:02d}-Zq-hush" for i, key in enumerate(SECRET_KEYS)}
    neighbours = {key: f"n-{key}-ok" for key in NEIGHBOUR_KEYS}
    data = {**secrets, **neighbours}
    sender.send(query=urlencode(data))
    sender.send(body=urlencode(data), content_type="application/x-www-form-urlencoded")
    sender.send(body=json.dumps({"account": data}), content_type="application/json")
    sender.send(body="\n".join(f"{k}={v}" for k, v in data.items()), content_type="text/plain")
    prop_neighbours = {key: f"n-{key}-ok" for key in PROPERTY_NEIGHBOUR_KEYS}
    for key, value in secrets.items():
        sender.send(properties={key: value, **prop_neighbours})
    events = sender.delivered()
    assert len(events) == 4 + len(secrets)
    text = _all_text(events)
    for key, value in secrets.items():
        assert value not in text, key
    for value in neighbours.values():
        assert text.count(value) >= 4 * 2, value  # query, form, JSON and text bodies
    for event in events[:2]:
        assert {k: event["request"]["params"][k] for k in neighbours} == neighbours
    assert events[2]["request"]["params"]["account"] == {
        **dict.fromkeys(secrets, REDACTED),
        **neighbours,
    }
    for event in events[4:]:
        props = event["properties"]
        assert {k: props[k] for k in prop_neighbours} == prop_neighbours
        assert REDACTED in props.values()


@pytest.mark.parametrize("secret", VALUE_SECRETS, ids=lambda s: s[:12])
def test_secret_values_never_leave(sender: Sender, secret: str) -> None:
    inside = f"paid with {secret} today"
    sender.send(query=urlencode({"note": secret, "memo": inside}))
    sender.send(
        body=urlencode({"note": secret, "memo": inside}),
        content_type="application/x-www-form-urlencoded",
    )
    sender.send(
        body=json.dumps({"note": secret, "list": [inside]}), content_type="application/json"
    )
    sender.send(body=f"note: {inside}\n", content_type="text/plain")
    sender.send(properties={"note": secret, "memo": inside, "nested": {"x": [inside]}})
    events = sender.delivered()
    assert len(events) == 5
    text = _all_text(events)
    assert NEEDLES[secret] not in text
    assert "paid with" in text and "today" in text  # only the secret part is cut
    replaced = f"Basic {REDACTED}" if secret.startswith("Basic") else REDACTED
    assert events[-1]["properties"]["memo"] == f"paid with {replaced} today"


def test_neighbour_values_stay(sender: Sender) -> None:
    properties = {f"v{i:02d}": value for i, value in enumerate(NEIGHBOUR_VALUES)}
    for start in range(0, len(NEIGHBOUR_VALUES), 16):
        chunk = dict(list(properties.items())[start : start + 16])
        sender.send(query=urlencode(chunk), properties=chunk)
        sender.send(body=json.dumps(chunk), content_type="application/json")
        sender.send(body="\n".join(chunk.values()), content_type="text/plain")
    events = sender.delivered()
    seen: dict[str, Any] = {}
    for event in events[0::3]:
        assert event["request"]["params"] == event["properties"]
        seen.update(event["properties"])
    assert seen == properties
    for event in events[1::3]:
        assert json.loads(event["request"]["body"]["content"]) == event["request"]["params"]
    texts = "\n".join(e["request"]["body"]["content"] for e in events[2::3])
    assert texts == "\n".join(NEIGHBOUR_VALUES)


def test_named_secrets_in_structures_never_leave(sender: Sender) -> None:
    for structure in STRUCTURES:
        both = {**structure, "neighbours": STRUCTURE_NEIGHBOURS}
        sender.send(body=json.dumps(both), content_type="application/json")
        sender.send(properties=both)
    sender.send(query=FORM_FIELDS)
    sender.send(body=FORM_FIELDS, content_type="application/x-www-form-urlencoded")
    events = sender.delivered()
    text = _all_text(events)
    for secret in [*STRUCTURE_SECRETS, "named-secret-5"]:
        assert secret not in text, secret
    for event in events[1:8:2]:  # properties: the lenient rule keeps otp_method
        assert event["properties"]["neighbours"] == STRUCTURE_NEIGHBOURS
    assert events[0]["request"]["params"]["fields"] == [{"name": "password", "value": REDACTED}]
    assert events[1]["properties"]["fields"] == [{"name": "password", "value": REDACTED}]
    assert events[7]["properties"]["pairs"] == [["password", REDACTED], ["theme", "dark"]]
    for event in events[8:]:
        params = event["request"]["params"]
        assert params["fields[0][value]"] == REDACTED
        assert params["fields[1][value]"] == "dark"
    assert "fields[1][value]=dark" in events[9]["request"]["body"]["content"]
