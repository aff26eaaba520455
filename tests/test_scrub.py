"""Scrubbing: secrets never leave the process, harmless neighbours stay readable."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sqreen import _secrets
from sqreen._scrub import (
    DEFAULT_SENSITIVE_KEYS,
    MAX_DEPTH,
    NEVER_COLLECTED_HEADERS,
    REDACTED,
    Scrubber,
)
from sqreen._secrets import is_card_number
from tests.test_scrub_corpus import FULLWIDTH, NEIGHBOUR_KEYS, SECRET_KEYS

S = Scrubber()

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
CARDS = [
    "4111 1111 1111 1111",  # Visa
    "4111-1111-1111-1111",
    "4111111111111111",
    "5500-0000-0000-0004",  # Mastercard
    "5555 5555 5555 4444",
    "2223003122003222",  # Mastercard 2-series
    "378282246310005",  # American Express
    "3782 822463 10005",
    "6011111111111117",  # Discover
    "3530111333300000",  # JCB
    "30569309025904",  # Diners Club
    "6200000000000005",  # UnionPay
    "4222222222222",  # Visa, 13 digits
]
HARMLESS_VALUES = [
    "1732270000000",  # a millisecond timestamp
    "1732270000000123",  # a microsecond timestamp
    "4000123456",  # an order id
    "ORD-2023-0001",
    "123e4567-e89b-12d3-a456-426614174000",  # a UUID
    "+1 (415) 555-0100",  # a phone number: not a secret (not scrubbed on purpose)
    "+44 20 7946 0958",
    "2024-01-01 2024-01-02",
    "4111 1111 1111 1112",  # a Visa prefix failing Luhn
    "1234567890123456",  # Luhn-valid? no issuer starts with 1
    "0000 0000 0000 0000",
    "bearers of good news",
    "https://example.com/path?q=1",
    "tokenizer",
    "203.0.113.9",
    "203.0.113.9 198.51.100.7 45.33.32.156",  # dots and spaces: never one card
    "5.123456789012345",  # decimals: a dot between two groups is not a card's
    "0.30000000000000004",
    "2024/01/01 2024/01/02",
    "415.555.0100",
    "4111.1111.1111.1112",
    "4111 1111 1111 1112".translate(FULLWIDTH),  # fullwidth, failing Luhn
    "Basic plan",  # not base64 of user:password
    "basic_plan",
    "Basic Tool",
    "Asia/Tokyo",
    "AKIA docs",
    "sk_live",
    "xoxo",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
]
#: Cards as typed with other separators or digits (not in CARDS: Luhn is checked on ASCII).
OTHER_CARDS = [
    "4111.1111.1111.1111",
    "4111/1111/1111/1111",
    "3782.822463.10005",
    "4111 1111 1111 1111".translate(FULLWIDTH),
    "4111111111111111".translate(FULLWIDTH),
    "5500-0000-0000-0004".translate(FULLWIDTH),
    "4111\u00a01111\u00a01111\u00a01111",
]


# -- keys -----------------------------------------------------------------------------------

SENSITIVE = [
    "password",
    "user_password",
    "passwordConfirm",
    "new-password",
    "newpassword",
    "Password2",
    "pwd",
    "pass",
    "auth_token",
    "authToken",
    "access_token",
    "accesstoken",
    "refresh-token",
    "tokens",
    "X-Api-Key",
    "api_key",
    "apiKey",
    "APIKey",
    "api.keys",
    "client_secret",
    "clientSecret",
    "sessionid",
    "session_id",
    "sessionId",
    "JSESSIONID",
    "csrfmiddlewaretoken",
    "csrf_token",
    "XSRF-TOKEN",
    "card_number",
    "cardNumber",
    "credit_card",
    "cvv",
    "cvv2",
    "otp_code",
    "pin",
    "ssn",
    "iban",
    "private_key",
    "privateKey",
    "jwt",
    "bearer",
    "credentials",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "passphrase",
    "authorization",
    "cookie",
    "user[password]",
    "data.auth",
    "session_count",  # accepted over-scrubbing: contains the token "session"
    *SECRET_KEYS,  # the corpus's: mfa_code, mot_de_passe, PassWord...
    "user_pw",
    "AWS_ACCESS_KEY_ID",
    "neuesPasswort",
    "CONTRASEÑA",
]
NOT_SENSITIVE = [
    "discard_reason",
    "cardinality",
    "classname",
    "class_name",
    "author",
    "authority",
    "passage",
    "compass",
    "bypass",
    "passes",
    "pinned",
    "spinner",
    "opinion",
    "order_id",
    "username",
    "email",
    "user_id",
    "tokenizer",
    "timestamp",
    "first_name",
    "next",
    "remember",
    *NEIGHBOUR_KEYS,  # the corpus's: pwned_count, api_version, basic_plan...
    "country_code",
    "verification_status",
    "",
]


@pytest.mark.parametrize("key", SENSITIVE)
def test_sensitive_keys(key: str) -> None:
    assert S.is_sensitive_key(key)
    assert S.is_sensitive_key(key)  # cached answer


@pytest.mark.parametrize("key", NOT_SENSITIVE)
def test_harmless_keys(key: str) -> None:
    assert not S.is_sensitive_key(key)


def test_default_list_is_the_designed_one() -> None:
    designed = (
        "password passwd pwd pass passphrase secret token jwt bearer auth authorization apikey "
        "cookie session sessionid csrf xsrf signature otp pin cvv cvc ssn iban cardnumber "
        "creditcard privatekey credentials"
    ).split()
    assert set(designed) <= DEFAULT_SENSITIVE_KEYS
    assert set(designed) ^ DEFAULT_SENSITIVE_KEYS == {"totp", "credential"}
    assert NEVER_COLLECTED_HEADERS == {
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-api-key",
    }


def test_extra_keys_add_to_the_defaults_never_replace_them() -> None:
    s = Scrubber(["ssn_last4", "mother_maiden_name", "X-Internal"])
    for key in ("motherMaidenName", "mother-maiden-name", "user_mother_maiden_name"):
        assert s.is_sensitive_key(key), key
    assert s.is_sensitive_key("ssn_last4") and s.is_sensitive_key("x_internal")
    assert s.is_sensitive_key("password") and s.is_sensitive_key("api_key")
    assert not s.is_sensitive_key("mother") and not s.is_sensitive_key("maiden_voyage")
    assert not S.is_sensitive_key("mother_maiden_name")


def test_key_cache_is_bounded() -> None:
    s = Scrubber()
    for i in range(10_000):
        s.is_sensitive_key(f"field_{i}")
    s.is_sensitive_key("x" * 10_000)
    assert len(s._cache) <= 4096
    assert s.is_sensitive_key("password") and not s.is_sensitive_key("field_1")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"extra_keys": [1]}, "scrub_keys: 1"),
        ({"extra_keys": ["--"]}, "scrub_keys: '--'"),
        ({"extra_keys": "password"}, "scrub_keys must be a list"),
        ({"value_patterns": ["("]}, r"scrub_values: '\('"),
        ({"value_patterns": ["a*"]}, "matches the empty string"),
        ({"value_patterns": [b"x"]}, "bytes"),
        ({"value_patterns": "x+"}, "scrub_values must be a list"),
    ],
)
def test_bad_configuration_names_the_entry(args: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Scrubber(**args)


# -- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("card", CARDS)
@pytest.mark.parametrize("template", ["{}", "card: {}.", "x{}y", "ref 12 {} end", "n°{}-ok"])
def test_card_numbers_are_removed_only_the_card_part(card: str, template: str) -> None:
    text = template.format(card)
    out = S.scrub_value(text)
    assert out == template.format(REDACTED)


@pytest.mark.parametrize("card", OTHER_CARDS)
@pytest.mark.parametrize("template", ["{}", "card: {}.", "x{}y", "ref 12 {} end", "n°{}-ok"])
def test_cards_with_dots_slashes_or_fullwidth_digits(card: str, template: str) -> None:
    assert S.scrub_value(template.format(card)) == template.format(REDACTED)


def test_dot_and_slash_cards_need_groups_of_one_separator() -> None:
    for text in ("4111.1111 1111.1111", "4111.1111/1111.1111", "41.11111111.111111"):
        assert S.scrub_value(text) == text
    assert S.scrub_value("4111 1111-1111 1111") == REDACTED  # spaces and dashes mix, as before


@pytest.mark.parametrize("value", HARMLESS_VALUES)
def test_harmless_values_survive(value: str) -> None:
    assert S.scrub_value(value) == value
    assert S.scrub({"value": value, "list": [value]}) == {"value": value, "list": [value]}


def test_card_next_to_digits_is_not_a_card() -> None:
    # Digit boundaries: "04111111111111111" is a 17-digit number, not a card.
    assert S.scrub_value("04111111111111111") == "04111111111111111"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer abc.DEF-123_~+/==", f"Bearer {REDACTED}"),
        ("Authorization: bearer abc123", f"Authorization: bearer {REDACTED}"),
        ("BEARER:abc123 tail", f"BEARER {REDACTED} tail"),
        (f"token {JWT} tail", f"token {REDACTED} tail"),
        (f"/verify?t={JWT}&x=1", f"/verify?t={REDACTED}&x=1"),
        (f"Bearer {JWT}", f"Bearer {REDACTED}"),
        ("postgres://app:hunter2@db:5432/x", f"postgres://app:{REDACTED}@db:5432/x"),
        ("https://example.com:8080/a@b", "https://example.com:8080/a@b"),
    ],
)
def test_bearer_tokens_jwts_and_url_passwords(value: str, expected: str) -> None:
    assert S.scrub_value(value) == expected


GHP = "ghp_" + "A1b2C3d4" * 4 + "E5f6"
AWS = "AKIA" + "IOSFODNN7EXAMPLE"
PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBk\n-----END EC PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"key {AWS} ok", f"key {REDACTED} ok"),
        ("ASIA" + "Y34FZKBOKMUTVV7A", REDACTED),
        (f"{AWS}X", f"{AWS}X"),  # 17 characters: not a key id
        (f"x{AWS}", f"x{AWS}"),
        (f"token={GHP}&x=1", f"token={REDACTED}&x=1"),
        (f"my_{GHP}", f"my_{REDACTED}"),
        ("github_pat_" + "11ABCDEFG0_" + "x" * 40, REDACTED),
        ("sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", REDACTED),
        ("rk_test_" + "4eC39HqLyjWDarjtT1zdp7dc.", f"{REDACTED}."),
        ("whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", REDACTED),
        ("xoxb-" + "123456789012-1234567890123-AbCdEf", REDACTED),
        ("xapp-" + "1-A0123456789-0123456789012-abcdef", REDACTED),
        (f"a\n{PEM}\nb", f"a\n{REDACTED}\nb"),
        ("x -----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN", f"x {REDACTED}"),  # cut: to the end
        ("Authorization: Basic dXNlcjpodW50ZXIy", f"Authorization: Basic {REDACTED}"),
        ("basic=dXNlcjpodW50ZXIy.", f"basic {REDACTED}."),
        ("Basic dXNlcjpodW50ZXIy==", f"Basic {REDACTED}"),  # padding is not checked
        ("Basic dXNlcg==", "Basic dXNlcg=="),  # "user": no password
    ],
)
def test_tokens_by_their_form(value: str, expected: str) -> None:
    assert S.scrub_value(value) == expected


def test_value_patterns_add_to_the_builtin_ones() -> None:
    s = Scrubber(value_patterns=[r"ORD-\d{4}-\d{4}", re.compile(r"(?i)secret-\w+")])
    assert s.scrub_value("order ORD-2023-0001 / SECRET-x1 / 4111111111111111") == (
        f"order {REDACTED} / {REDACTED} / {REDACTED}"
    )


def test_integer_card_numbers_are_removed() -> None:
    data = {"card": 4111111111111111, "amount": 4000123456, "ts": 1732270000000, "ok": True}
    assert S.scrub(data) == {
        "card": REDACTED,
        "amount": 4000123456,
        "ts": 1732270000000,
        "ok": True,
    }


def test_luhn_and_issuers() -> None:
    assert all(is_card_number(re.sub(r"\D", "", card)) for card in CARDS)
    assert not is_card_number("4111111111111112")
    assert not is_card_number("1111111111111117")
    assert not is_card_number("37828224631000")  # Amex is 15 digits


# -- structures -----------------------------------------------------------------------------

SECRETS = [
    "hunter2-query",
    "hunter2-form",
    "hunter2-json",
    "pwd-value-9",
    "tok-abc-123",
    "deep-secret-42",
    "key-in-list-7",
    "sess-xyz",
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "378282246310005",
    "6011111111111117",
    JWT,
    "opaque-bearer-value",
]


def _corpus() -> dict[str, Any]:
    return {
        "query": {"password": "hunter2-query", "next": "/home", "discard_reason": "dup"},
        "form": [("pwd", "pwd-value-9"), ("username", "alice")],
        "body": {
            "user": {
                "profile": {"auth_token": "tok-abc-123", "author": "Ann", "cardinality": 3},
                "settings": [{"client_secret": "deep-secret-42"}, {"api_key": ["key-in-list-7"]}],
            },
            "sessionId": {"nested": "sess-xyz"},
            "note": "paid with 4111 1111 1111 1111, then 5500-0000-0000-0004",
            "cards": ["378282246310005", "x 6011111111111117 y"],
            "headers": {"X-Forwarded": f"Bearer {JWT}", "Via": "Bearer opaque-bearer-value"},
        },
        "harmless": {
            "classname": "Foo",
            "timestamp_ms": "1732270000000",
            "order_id": "4000123456",
            "ref": "ORD-2023-0001",
            "uuid": "123e4567-e89b-12d3-a456-426614174000",
            "phone": "+1 415 555 0100",
        },
    }


def test_corpus_secrets_never_appear_and_neighbours_survive() -> None:
    data = _corpus()
    before = copy.deepcopy(data)
    result = S.scrub(data)
    dumped = json.dumps(result)
    for secret in SECRETS:
        assert secret not in dumped, secret
    assert data == before  # the input is not mutated
    assert result["harmless"] == data["harmless"]
    assert result["query"] == {"password": REDACTED, "next": "/home", "discard_reason": "dup"}
    assert result["form"] == [("pwd", REDACTED), ("username", "alice")]
    assert result["body"]["user"]["profile"] == {
        "auth_token": REDACTED,
        "author": "Ann",
        "cardinality": 3,
    }
    assert result["body"]["sessionId"] == REDACTED  # a dict under a sensitive key
    assert result["body"]["user"]["settings"] == [
        {"client_secret": REDACTED},
        {"api_key": REDACTED},
    ]
    assert result["body"]["note"] == f"paid with {REDACTED}, then {REDACTED}"


def test_secret_names_given_as_values() -> None:
    data = {
        "fields": [
            {"value": "hunter2", "name": "password"},  # either order
            {"key": "api_key", "value": {"nested": 1}},
            {"field": "otp_method", "value": "sms"},
            {"name": "theme", "value": "dark"},
            {"name": "password"},
        ],
        "pairs": [["password", "hunter2"], ["theme", "dark"], ("pwd", "x")],
        "f[0][name]": "pw",
        "f[0][value]": "hunter2",
        "f.1.name": "theme",
        "f.1.value": "dark",
    }
    assert S.scrub(data) == {
        "fields": [
            {"value": REDACTED, "name": "password"},
            {"key": "api_key", "value": REDACTED},
            {"field": "otp_method", "value": REDACTED},  # the strict rule, in request data
            {"name": "theme", "value": "dark"},
            {"name": "password"},
        ],
        "pairs": [["password", REDACTED], ["theme", "dark"], ("pwd", REDACTED)],
        "f[0][name]": "pw",
        "f[0][value]": REDACTED,
        "f.1.name": "theme",
        "f.1.value": "dark",
    }
    props = S.scrub_properties({"fields": [{"field": "otp_method", "value": "sms"}]})
    assert props == {"fields": [{"field": "otp_method", "value": "sms"}]}  # the lenient rule
    pairs = [("f[0][name]", "password"), ("f[0][value]", "hunter2"), ("f[0][note]", "x")]
    assert S.scrub_query_like(pairs) == [*pairs[:1], ("f[0][value]", REDACTED), pairs[2]]


def test_query_like_pairs() -> None:
    pairs = [("pwd", "pwd-value-9"), ("tag", "a"), ("tag", "4111111111111111"), (JWT, "")]
    assert S.scrub_query_like(pairs) == [
        ("pwd", REDACTED),
        ("tag", "a"),
        ("tag", REDACTED),
        (REDACTED, ""),
    ]


def test_containers_keep_their_shape_and_other_values() -> None:
    marker = object()
    data = {"t": (1, "4111111111111111"), 3: "x", "o": marker, "f": 1.5, "n": None}
    assert S.scrub(data) == {"t": (1, REDACTED), 3: "x", "o": marker, "f": 1.5, "n": None}
    pairs = [("password", {"a": 1}), ("x", "4111111111111111"), ("a", "b", "c")]
    assert S.scrub(pairs) == [("password", REDACTED), ("x", REDACTED), ("a", "b", "c")]


def test_depth_is_bounded() -> None:
    deep: Any = "leaf"
    for _ in range(200):
        deep = {"a": [deep]}
    result = S.scrub(deep)
    node = result
    for _ in range(MAX_DEPTH // 2):
        node = node["a"][0]
    assert node == REDACTED
    cycle: list[Any] = []
    cycle.append(cycle)
    assert json.dumps(S.scrub(cycle)).count(REDACTED) == 1


# -- bodies ---------------------------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("text", "content_type", "secret", "kept"),
    [
        (
            '{"user": "alice", "password": "hunter2-json"}',
            "application/json",
            "hunter2-json",
            "alice",
        ),
        (
            '{"user": "alice", "password": "hunter2-json"}',
            "application/json; charset=utf-8",
            "hunter2-json",
            "alice",
        ),
        (
            '{"a": {"b": {"pwd": "hunter2-json"}}}',
            "application/vnd.api+json",
            "hunter2-json",
            '"a"',
        ),
        ('{"password": "hunter2-json"}', FORM, "hunter2", ""),
        ('[{"token": "tok-abc-123"}]', None, "tok-abc-123", "[{"),
        ("user=alice&password=hunter2-form", FORM, "hunter2", "alice"),
        ("user=alice&password=hunter2-fo", FORM, "hunter2", "alice"),  # cut
        ("card=4111+1111+1111+1111", FORM, "1111", "card="),
        # Cut at max_body_size: not JSON any more.
        ('{"user": "alice", "password": "hunter2-json', "application/json", "hunter2", "alice"),
        (
            '{"user": "alice", "password": "hunter2-json", "n',
            "application/json",
            "hunter2",
            "alice",
        ),
        ("{'password': 'hunter2-py', 'user': 'alice'}", "text/plain", "hunter2", "alice"),
        ("password=hunter2-text user=alice", "text/plain", "hunter2", "alice"),
        ("auth_token: tok-abc-123\nuser: alice", None, "tok-abc-123", "alice"),
        (f"log in with {JWT} please", "text/plain", JWT, "please"),
        (
            '--b\r\nContent-Disposition: form-data; name="password"\r\n\r\nhunter2-mp\r\n'
            '--b\r\nContent-Disposition: form-data; name="user"\r\n\r\nalice\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
            "hunter2-mp",
            "alice",
        ),
        (
            '--b\r\nContent-Disposition: form-data; filename="a.txt"; name="pwd"\r\n'
            "Content-Type: text/plain\r\n\r\nhunter2-mp",
            "multipart/form-data; boundary=b",
            "hunter2-mp",
            "a.txt",
        ),
    ],
)
def test_text_bodies(text: str, content_type: str | None, secret: str, kept: str) -> None:
    out = S.scrub_text_body(text, content_type)
    assert secret not in out
    assert kept in out
    assert S.scrub_text_body(out, content_type) == out


@pytest.mark.parametrize(
    "text",
    ["", "{", "[" * 100_000, '{"a": 1e999999}', "\x00\xff", "%zz=%", "a=" + "9" * 5000, "]]"],
)
@pytest.mark.parametrize(
    "content_type", [None, "application/json", "application/x-www-form-urlencoded", "multipart/x"]
)
def test_malformed_bodies_never_raise(text: str, content_type: str | None) -> None:
    assert isinstance(S.scrub_text_body(text, content_type), str)


def test_json_bodies_stay_utf8_encodable() -> None:
    out = S.scrub_text_body('{"a": "\\ud800", "b": "caf\u00e9", "password": "x"}', None)
    assert json.loads(out) == {"a": "\ud800", "b": "caf\u00e9", "password": REDACTED}
    out.encode("utf-8")
    assert S.scrub_text_body('{"b": "caf\u00e9"}', "application/json") == '{"b": "caf\u00e9"}'


def test_form_body_keeps_harmless_pairs_readable() -> None:
    out = S.scrub_text_body(
        "next=%2Fhome&tag=a&tag=b&password=x", "application/x-www-form-urlencoded"
    )
    assert out == "next=%2Fhome&tag=a&tag=b&password=[redacted]"


# -- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("/reset/abc123", {"token": "abc123"}, f"/reset/{REDACTED}"),
        (
            "/reset/abc123/confirm",
            {"token": "abc123", "step": "confirm"},
            f"/reset/{REDACTED}/confirm",
        ),
        ("/reset/a%20b%2Fc", {"token": "a b/c"}, f"/reset/{REDACTED}"),
        ("/reset/a%2fb", {"token": "a/b"}, f"/reset/{REDACTED}"),
        ("/reset/caf%C3%A9", {"token": "café"}, f"/reset/{REDACTED}"),
        ("/files/a/b/c.txt", {"secret": "a/b/c.txt"}, f"/files/{REDACTED}"),
        ("/dl/abc123.json", {"token": "abc123"}, f"/dl/{REDACTED}.json"),
        ("/v12/pin/12", {"pin": 12}, f"/v12/pin/{REDACTED}"),
        ("/users/42", {"user_id": 42}, "/users/42"),
        ("/users/42", None, "/users/42"),
        ("/reset/x", {"token": None}, "/reset/x"),
        ("/reset/x", {"token": ""}, "/reset/x"),
        (f"/verify/{JWT}/ok", None, f"/verify/{REDACTED}/ok"),
        ("/cards/4111%201111%201111%201111", None, f"/cards/{REDACTED}"),
        ("/cards/4111111111111111/charge", {}, f"/cards/{REDACTED}/charge"),
        ("/a%20b/c", None, "/a%20b/c"),
    ],
)
def test_scrub_path(path: str, params: dict[str, Any] | None, expected: str) -> None:
    assert S.scrub_path(path, params) == expected


# -- properties -----------------------------------------------------------------------------

JSON_LIKE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.sampled_from([*CARDS, JWT, "Bearer x", *HARMLESS_VALUES]),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(max_size=12) | st.sampled_from(SENSITIVE + NOT_SENSITIVE), children, max_size=5
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(data=JSON_LIKE)
def test_scrub_never_raises_and_is_idempotent(data: Any) -> None:
    once = S.scrub(data)
    assert S.scrub(once) == once
    json.dumps(once)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=200)
    | st.lists(
        st.sampled_from(
            [
                "4111",
                " ",
                "-",
                "1",
                "4".translate(FULLWIDTH),
                "/",
                "eyJabcde",
                ".",
                "bearer",
                "://u:p@",
                "Basic ",
                "dXNlcjpw",
                "ghp_",
                "A" * 8,
                "AKIA",
                "-----BEGIN PRIVATE KEY-----",
                "\n",
            ]
        ),
        max_size=30,
    ).map("".join)
)
def test_scrub_value_is_idempotent(text: str) -> None:
    once = S.scrub_value(text)
    assert S.scrub_value(once) == once


def _visa(body: str) -> str:
    digits = "4" + body
    for check in "0123456789":
        if is_card_number(digits + check):
            return digits + check
    raise AssertionError("unreachable")


@settings(max_examples=400, deadline=None)
@given(
    prefix=st.text(max_size=40),
    body=st.text(alphabet="0123456789", min_size=14, max_size=14),
    style=st.sampled_from(["", " ", "-", ".", "/", "\u3000"]),
    suffix=st.text(max_size=40),
)
def test_a_visa_number_anywhere_in_text_is_removed(
    prefix: str, body: str, style: str, suffix: str
) -> None:
    # A digit right before or after (fullwidth ones too) makes it a longer number.
    assume(not prefix[-1:].isdecimal() and not suffix[:1].isdecimal())
    card = _visa(body)
    formatted = style.join(card[i : i + 4] for i in range(0, 16, 4))
    out = S.scrub_value(prefix + formatted + suffix)
    assert formatted not in out
    assert card not in re.sub(r"[ ./\u3000-]", "", out)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=300),
    content_type=st.sampled_from(
        [
            None,
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "multipart/form-data",
        ]
    ),
)
def test_scrub_text_body_never_raises(text: str, content_type: str | None) -> None:
    assert isinstance(S.scrub_text_body(text, content_type), str)


# -- hostile shapes: the scrubbers' work grows with the text, never with its square ---------

#: The JWT pattern as it was searched, for the differential test.
_JWT_SEARCHED = re.compile(r"eyJ[A-Za-z0-9_-]{5,}(?:\.[A-Za-z0-9_-]*){2,4}")


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.sampled_from(["eyJ", "e", "y", "J", "a", "9", ".", "-", "_", " ", "eyJhbGci", "é"]),
        max_size=40,
    ).map("".join)
)
def test_jwts_are_found_as_the_search_found_them(text: str) -> None:
    assert _secrets._scrub_jwts(text) == _JWT_SEARCHED.sub(_secrets.REDACTED, text)


@pytest.mark.parametrize(
    ("text", "most"),
    [
        ("eyJ" * 20_000, 1),  # one segment: tried once, not 20 000 times to its end
        ("eyJ_" * 15_000, 1),
        ("eyJab." * 10_000, 10_000),  # a segment each: tried once each
        ("eyJ" * 50 + " " + JWT, 2),
    ],
)
def test_a_jwt_is_tried_once_a_segment(
    text: str, most: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    tries = []
    searched = _secrets._JWT

    class Counting:
        def match(self, string: str, pos: int) -> re.Match[str] | None:
            tries.append(pos)
            return searched.match(string, pos)

    monkeypatch.setattr(_secrets, "_JWT", Counting())
    scrubbed = _secrets.scrub_secrets(text)
    assert len(tries) <= most
    assert (JWT in text) == (JWT not in scrubbed and _secrets.REDACTED in scrubbed)


@pytest.mark.parametrize("text", ["1." * 32_768, "12/" * 20_000, "1 " * 32_768])
def test_runs_of_tiny_groups_fail_closed_within_the_budget(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = []
    monkeypatch.setattr(
        _secrets, "is_card_number", lambda d: checked.append(d) or is_card_number(d)
    )
    scrubbed = _secrets.scrub_secrets(text)
    assert not any(c.isdigit() for c in scrubbed[:20]) and _secrets.REDACTED in scrubbed
    assert len(checked) <= _secrets._CARD_BUDGET


@pytest.mark.parametrize(
    ("body", "secret"),
    [
        ('{"user":{"password":"S3CRET-cn","name":"bob"},"avatar":"xxxx', "S3CRET-cn"),
        ('{"items":[{"password":"S3CRET-ca"}],"x":"', "S3CRET-ca"),
        ('{"credentials": {"password": "S3CRET-t1", "otp": "1', "S3CRET-t1"),
        ('{"pass\\u0077ord":"S3CRET-esc","a":"', "S3CRET-esc"),
        ('{"pass\\u0077\\u006Frd":"S3CRET-esc2","a":"', "S3CRET-esc2"),
    ],
)
def test_a_json_body_cut_at_the_cap_keeps_no_secret(body: str, secret: str) -> None:
    # Compact JSON (what browsers send) cut at max_body_size does not parse: read as text,
    # an object's value was taken for the value of its parent's key, hiding its pairs.
    scrubbed = Scrubber().scrub_text_body(body, "application/json")
    assert secret not in scrubbed and REDACTED in scrubbed


@pytest.mark.parametrize(
    ("body", "ctype", "kept"),
    [
        ("password=[hunter2]", "text/plain", "hunter2"),
        ("password={hunter2}", "text/plain", "hunter2"),
        ("token=[abc123def]&x=1", "text/plain", "abc123def"),
        ('{"user":"bob","password":["hunter2"],"a":"', "application/json", "hunter2"),
        ('{"api_keys":["k-1234567","k2"],"x":1,', "application/json", "k-1234567"),
        ('{"password":{"old":"hunter1","new":"hunter2"},"n":"', "application/json", "hunter"),
        ('{"a":1}\n{"password": ["hunter3"]}\n', "application/json", "hunter3"),
        ('{"secret":{"a":"}","b":[1,{"c":"x]"}]},"keep":"yes","z":"', "application/json", '"x]"'),
        ('{"secret":{"a":"cut before its end', "application/json", "cut before"),
        ("x" * 254 + "_password=hunter2", "text/plain", "hunter2"),
    ],
)
def test_an_object_or_a_list_under_a_sensitive_key_is_redacted_whole(
    body: str, ctype: str, kept: str
) -> None:
    scrubbed = Scrubber().scrub_text_body(body, ctype)
    assert kept not in scrubbed and REDACTED in scrubbed
    if '"keep":"yes"' in body:
        assert '"keep":"yes"' in scrubbed  # what follows the structure is read on


def test_multipart_fields_are_scrubbed_in_one_pass() -> None:
    body = (
        '--b\r\nContent-Disposition: form-data; name="user"\r\n\r\nbob\r\n'
        '--b\r\nContent-Disposition: form-data; name="password"\r\n'
        "Content-Type: text/plain\r\n\r\nhunter2\r\n"
        '--b\r\nContent-Disposition: form-data; name="f"; filename="password.txt"\r\n\r\n'
        "data\r\n--b--\r\n"
    )
    scrubbed = Scrubber().scrub_text_body(body, "multipart/form-data; boundary=b")
    assert scrubbed == body.replace("hunter2", REDACTED)
    cut = '--b\r\nContent-Disposition: form-data; name="token"\r\n\r\nabc'  # at the cap
    assert Scrubber().scrub_text_body(cut, "multipart/form-data").endswith(f"\r\n\r\n{REDACTED}")


def test_an_escaped_backslash_is_no_escape() -> None:
    body = '{"pass\\\\u0077ord":"kept","a":"'  # the key is pass\u0077ord, literally
    assert Scrubber().scrub_text_body(body, "application/json") == body


#: The key-value pattern as it was searched (5b9def1).
_KEY_VALUE_SEARCHED = re.compile(
    r"""(["']?)([A-Za-z_][\w.\-]{0,63})\1(\s*[:=]\s*)("(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s&;,}]+)"""
)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "password",
                "token",
                "=",
                ":",
                " ",
                '"',
                "'",
                "a",
                "9",
                "_",
                ".",
                "-",
                "&",
                ",",
                "}",
                "{",
                "é",
                "x" * 30,
                "\\",
            ]
        ),
        max_size=12,
    ).map("".join)
)
def test_pairs_in_text_are_read_as_the_search_read_them(text: str) -> None:
    scrubber = Scrubber()

    def searched(match: re.Match[str]) -> str:
        if not scrubber.is_sensitive_key(match.group(2)):
            return match.group(0)
        value = match.group(4)
        quote = value[0] if value[:1] in ("'", '"') else ""
        return f"{match.group(1)}{match.group(2)}{match.group(1)}{match.group(3)}{quote}{REDACTED}{quote}"  # noqa: E501

    got = scrubber._scrub_pairs(text)
    # The same, or more redacted: an object or a list under a sensitive key whole, the
    # pairs inside an object under another key, keys of more than 64 characters.
    expected = _KEY_VALUE_SEARCHED.sub(searched, text)
    # Where the old search redacted, so does the new one (an object under a sensitive key is
    # one redaction where the search made one of each pair in it); where it redacted
    # nothing, the new one may redact more (pairs inside an object, long keys).
    if REDACTED in expected:
        assert REDACTED in got
    if got != expected:
        assert got.count(REDACTED) >= 1


def test_a_run_of_more_groups_than_any_list_of_cards_is_closed_unscanned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    monkeypatch.setattr(
        _secrets, "is_card_number", lambda d: checked.append(d) or is_card_number(d)
    )
    long_run = " ".join(["7"] * (_secrets._MOST_GROUPS + 1))
    assert _secrets.scrub_secrets(f"ids {long_run} end") == f"ids {_secrets.REDACTED} end"
    assert checked == []
    # Up to the bound, scanned: the card among other numbers is found, the rest kept.
    short_run = " ".join(["7"] * 20 + ["4111", "1111", "1111", "1111"] + ["7"] * 20)
    scrubbed = _secrets.scrub_secrets(short_run)
    assert scrubbed.startswith("7 7 ") and "4111" not in scrubbed and _secrets.REDACTED in scrubbed
