"""Client IP resolution: a client on the internet must never choose its IP."""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqreen import _ip_warnings
from sqreen._client_ip import TrustedProxies, ip_in_networks, resolve_client_ip
from sqreen._ip_syntax import canonical_ip, normalize_ip
from sqreen._ip_warnings import (
    SILENT_PROXY_EVENTS,
    WATCHED_EVENTS,
    maybe_warn_untrusted_proxy,
    should_warn_untrusted_private,
    warn_untrusted_proxy_once,
)

DEFAULT = TrustedProxies(None)
NOBODY = TrustedProxies([])
TEN = TrustedProxies(["10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        # A public peer is the client, whatever it says.
        ("8.8.8.8", "1.2.3.4", DEFAULT, "8.8.8.8"),
        ("8.8.8.8", "1.2.3.4", TEN, "8.8.8.8"),
        # Private is not trusted: only configured proxies are.
        ("192.168.1.10", "1.2.3.4", DEFAULT, "192.168.1.10"),
        ("10.1.2.3", "1.2.3.4", DEFAULT, "10.1.2.3"),
        # Behind loopback (the default) and behind a configured CIDR.
        ("127.0.0.1", "1.2.3.4", DEFAULT, "1.2.3.4"),
        ("::1", "1.2.3.4", DEFAULT, "1.2.3.4"),
        ("10.1.2.3", "1.2.3.4", TEN, "1.2.3.4"),
        # The client wrote "6.6.6.6"; the proxy appended the real address.
        ("127.0.0.1", "6.6.6.6, 203.0.113.9", DEFAULT, "203.0.113.9"),
        ("10.0.0.1", "6.6.6.6, 203.0.113.9, 10.0.0.7", TEN, "203.0.113.9"),
        ("10.0.0.1", "6.6.6.6,203.0.113.9,10.0.0.7,10.9.9.9", TEN, "203.0.113.9"),
        # A client inside the trusted range is trusted: the left-most valid hop wins.
        ("127.0.0.1", "127.0.0.2, 127.0.0.3", DEFAULT, "127.0.0.2"),
        # Trust nobody: even loopback is the client.
        ("127.0.0.1", "1.2.3.4", NOBODY, "127.0.0.1"),
        # No header, or an empty one: the peer.
        ("127.0.0.1", None, DEFAULT, "127.0.0.1"),
        ("127.0.0.1", "", DEFAULT, "127.0.0.1"),
        ("127.0.0.1", "   ", DEFAULT, "127.0.0.1"),
        ("127.0.0.1", " , ,203.0.113.9, ", DEFAULT, "203.0.113.9"),  # empty elements skipped
        # Garbage stops the walk at the nearest trusted address.
        ("127.0.0.1", "unknown", DEFAULT, "127.0.0.1"),
        ("127.0.0.1", "1.2.3.4, unknown", DEFAULT, "127.0.0.1"),
        ("127.0.0.1", "1.2.3.4, _hidden, 127.0.0.5", DEFAULT, "127.0.0.5"),
        ("127.0.0.1", "6.6.6.6, example.com", DEFAULT, "127.0.0.1"),
        ("127.0.0.1", "6.6.6.6, 1.2.3", DEFAULT, "127.0.0.1"),
        ("127.0.0.1", "6.6.6.6, 1.2.3.4.5", DEFAULT, "127.0.0.1"),
        ("127.0.0.1", "6.6.6.6, 010.0.0.1", DEFAULT, "127.0.0.1"),  # octal-looking
        ("127.0.0.1", "6.6.6.6, 1.2.3.4:99999x", DEFAULT, "127.0.0.1"),
        # IPv4-mapped IPv6 peers and hops are unmapped.
        ("::ffff:127.0.0.1", "203.0.113.9", DEFAULT, "203.0.113.9"),
        ("::ffff:8.8.8.8", "203.0.113.9", DEFAULT, "8.8.8.8"),
        ("127.0.0.1", "::ffff:203.0.113.9", DEFAULT, "203.0.113.9"),
        ("127.0.0.1", "6.6.6.6, ::ffff:127.0.0.9", DEFAULT, "6.6.6.6"),
        # Ports, brackets, quotes, case.
        ("127.0.0.1", "203.0.113.9:5678", DEFAULT, "203.0.113.9"),
        ("127.0.0.1", "[2001:db8::1]:443", DEFAULT, "2001:db8::1"),
        ("127.0.0.1", "[2001:DB8::1]", DEFAULT, "2001:db8::1"),
        ("127.0.0.1", "2001:0db8:0000::1", DEFAULT, "2001:db8::1"),
        ("127.0.0.1", '"203.0.113.9"', DEFAULT, "203.0.113.9"),
        ("127.0.0.1:8000", "203.0.113.9", DEFAULT, "203.0.113.9"),
        ("[::1]:8000", "203.0.113.9", DEFAULT, "203.0.113.9"),
        # A Unix socket (no peer address) is trusted by default, not with an explicit list.
        (None, "203.0.113.9", DEFAULT, "203.0.113.9"),
        ("", "203.0.113.9", DEFAULT, "203.0.113.9"),
        (None, None, DEFAULT, None),
        (None, "unknown", DEFAULT, None),
        (None, "203.0.113.9", TEN, None),
        (None, "203.0.113.9", TrustedProxies(["unix"]), "203.0.113.9"),
        (None, "203.0.113.9", NOBODY, None),
        # A peer that is not an address is untrusted, and not an IP either.
        ("testclient", "203.0.113.9", DEFAULT, None),
    ],
)
def test_x_forwarded_for(
    peer: str | None, xff: str | None, trusted: TrustedProxies, expected: str | None
) -> None:
    assert resolve_client_ip(peer, xff, trusted) == expected
    assert resolve_client_ip(peer, xff, trusted, "X-Forwarded-For") == expected
    for _ in range(2):  # resolved, then remembered
        assert trusted.client_ip(peer, xff, "x-forwarded-for", False) == expected


def test_too_many_hops_stop_the_walk_at_a_trusted_hop() -> None:
    header = "203.0.113.9, " + ", ".join(["127.0.0.2"] * 40)
    assert resolve_client_ip("127.0.0.1", header, DEFAULT) == "127.0.0.2"
    forwarded = 'for="203.0.113.9", ' + ", ".join(['for="127.0.0.2"'] * 40)
    assert resolve_client_ip("127.0.0.1", forwarded, DEFAULT, "forwarded") == "127.0.0.2"


@pytest.mark.parametrize(
    ("header_value", "trusted", "expected"),
    [
        ('for="[2001:db8::1]:4711";proto=https, for=192.0.2.60', DEFAULT, "192.0.2.60"),
        (
            'for="[2001:db8::1]:4711";proto=https, for=192.0.2.60',
            TrustedProxies(["127.0.0.1", "192.0.2.60"]),
            "2001:db8::1",
        ),
        ('for="[2001:db8::7]:4711";proto=https, for=127.0.0.1', DEFAULT, "2001:db8::7"),
        ("For=203.0.113.9;Proto=http", DEFAULT, "203.0.113.9"),  # parameter names: any case
        ('proto=https; FOR = "203.0.113.9:8080" ;by=127.0.0.1', DEFAULT, "203.0.113.9"),
        ("for=203.0.113.9;host=example.com,for=127.0.0.5", DEFAULT, "203.0.113.9"),
        ('for="\\203.0.113.9"', DEFAULT, "203.0.113.9"),  # quoted-pair
        # Garbage and missing for=: the nearest trusted address.
        ("for=unknown", DEFAULT, "127.0.0.1"),
        ("for=_hidden, for=127.0.0.5", DEFAULT, "127.0.0.5"),
        ("for=203.0.113.9, proto=https", DEFAULT, "127.0.0.1"),
        ("for=6.6.6.6;for=203.0.113.9", DEFAULT, "127.0.0.1"),  # two for= in one element
        ("for", DEFAULT, "127.0.0.1"),
        # The client's part is malformed; the hops proxies appended still parse.
        ('for="6.6.6.6, for=203.0.113.9', DEFAULT, "203.0.113.9"),
        ('for="6.6.6.6, for="[2001:db8::7]"', DEFAULT, "2001:db8::7"),
        ('host="a, for=6.6.6.6";for=203.0.113.9', DEFAULT, "203.0.113.9"),
        ('for="6.6.6.6\\", for=203.0.113.9', DEFAULT, "203.0.113.9"),
    ],
)
def test_forwarded_rfc_7239(header_value: str, trusted: TrustedProxies, expected: str) -> None:
    assert resolve_client_ip("127.0.0.1", header_value, trusted, "Forwarded") == expected
    assert resolve_client_ip("8.8.8.8", header_value, trusted, "Forwarded") == "8.8.8.8"


@pytest.mark.parametrize(
    ("peer", "value", "expected"),
    [
        ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", " [2001:db8::2]:80 ", "2001:db8::2"),
        ("127.0.0.1", "203.0.113.9, 6.6.6.6", "127.0.0.1"),  # one address, or garbage
        ("127.0.0.1", "127.0.0.8", "127.0.0.8"),
        ("8.8.8.8", "203.0.113.9", "8.8.8.8"),
    ],
)
def test_x_real_ip(peer: str, value: str, expected: str) -> None:
    assert resolve_client_ip(peer, value, DEFAULT, "X-Real-IP") == expected


def test_any_other_header_is_a_list() -> None:
    header = "6.6.6.6, 203.0.113.9"
    assert resolve_client_ip("127.0.0.1", header, DEFAULT, "CF-Connecting-IP") == "203.0.113.9"
    assert resolve_client_ip("8.8.8.8", header, DEFAULT, "True-Client-IP") == "8.8.8.8"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("  1.2.3.4\t", "1.2.3.4"),
        ('"1.2.3.4"', "1.2.3.4"),
        ("1.2.3.4:5678", "1.2.3.4"),
        ('"1.2.3.4:5678"', "1.2.3.4"),
        ("1.2.3.4:_port", "1.2.3.4"),  # RFC 7239 obfuscated port
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::FFFF:1.2.3.4", "1.2.3.4"),
        ("[::ffff:1.2.3.4]:80", "1.2.3.4"),
        ("::ffff:0102:0304", "1.2.3.4"),
        ("fe80::1%eth0", "fe80::1"),
        ("::1", "::1"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("   ", None),
        ("example.com", None),
        ("1.2.3.4:", None),
        ("1.2.3.4:80:80", None),
        ("1.2.3.4:http", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("[1.2.3.4.5]", None),
        ("01.2.3.4", None),
        ("1.2.3.4/24", None),
        ("\uff11.\uff12.\uff13.\uff14", None),  # full-width digits
        ("1" * 200, None),
        ("1.2.3.4" + " " * 200, None),
    ],
)
def test_normalize_ip(value: str, expected: str | None) -> None:
    assert normalize_ip(value) == expected
    assert canonical_ip(value) == expected


def _spellings(number: int, v6: bool) -> list[str]:
    address = ipaddress.IPv6Address(number) if v6 else ipaddress.IPv4Address(number % 2**32)
    texts = [str(address), str(address).upper()]
    if isinstance(address, ipaddress.IPv6Address):
        texts += [address.exploded, f"[{address}]:443", f"{address}%eth0"]
    return texts


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.integers(0, 2**128 - 1),
        st.integers(0, 2**48 - 1).map(lambda n: n << 80),  # long zero runs, at either end
        st.integers(0, 2**32 - 1).map(lambda n: 0xFFFF << 32 | n),  # IPv4-mapped
        st.integers(0, 2**32 - 1),  # IPv4-compatible, and IPv4
        st.lists(st.sampled_from([0, 0, 1, 0xFFFF]), min_size=8, max_size=8).map(
            lambda parts: sum(p << (16 * i) for i, p in enumerate(parts))
        ),
    ),
    st.booleans(),
    st.text(alphabet="0123456789abcdefABCDEF:./[]% x", max_size=48),
)
def test_canonical_ip_answers_as_normalize_ip(number: int, v6: bool, junk: str) -> None:
    """The fast path recognises canonical text; it never answers otherwise than parsing."""
    for text in [*_spellings(number, v6), junk]:
        assert canonical_ip(text) == normalize_ip(text), text


# -- trusted proxies ------------------------------------------------------------------------


def test_default_trusts_loopback_and_unix_sockets_only() -> None:
    assert "127.0.0.1" in DEFAULT and "127.255.0.9" in DEFAULT and "::1" in DEFAULT
    assert "::ffff:127.0.0.1" in DEFAULT
    assert ipaddress.ip_address("127.0.0.1") in DEFAULT
    for untrusted in ("10.0.0.1", "192.168.1.1", "172.17.0.1", "fd00::1", "fe80::1", "8.8.8.8"):
        assert untrusted not in DEFAULT  # never is_private
    assert DEFAULT.trusts_unix_socket
    assert [str(n) for n in DEFAULT.networks] == ["127.0.0.0/8", "::1/128"]


def test_empty_list_trusts_nobody() -> None:
    assert "127.0.0.1" not in NOBODY and "::1" not in NOBODY
    assert NOBODY.networks == () and not NOBODY.trusts_unix_socket


def test_explicit_entries() -> None:
    trusted = TrustedProxies([" 10.0.0.0/8 ", "192.0.2.7", "2001:db8::/32", "[::1]", "UNIX"])
    assert [str(n) for n in trusted.networks] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "2001:db8::/32",
        "::1/128",
    ]
    assert trusted.trusts_unix_socket
    assert "10.255.255.255" in trusted and "192.0.2.7" in trusted and "192.0.2.8" not in trusted
    assert "2001:db8:1::5" in trusted and "127.0.0.1" not in trusted
    assert "garbage" not in trusted and 42 not in trusted
    # An IPv4-mapped CIDR means its IPv4 network, since addresses are unmapped.
    assert [str(n) for n in TrustedProxies(["::ffff:10.0.0.0/104"]).networks] == ["10.0.0.0/8"]
    assert TrustedProxies([ipaddress.ip_network("10.0.0.0/8")]) == TEN
    assert hash(TrustedProxies(["10.0.0.0/8", "10.0.0.0/8"])) == hash(TEN)
    assert repr(DEFAULT) == "TrustedProxies(['127.0.0.0/8', '::1/128', 'unix'])"


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        (["not-a-cidr"], "'not-a-cidr'"),
        (["10.0.0.0/8", "10.0.0.0/33"], "'10.0.0.0/33'"),
        (["10.0.0.1/8"], "did you mean '10.0.0.0/8'"),
        ([""], "''"),
        (["*"], "'\\*'"),
        (["localhost"], "'localhost'"),
        ([42], "42"),
        ("10.0.0.0/8", "not a string"),
    ],
)
def test_invalid_entries_name_the_entry(entries: object, named: str) -> None:
    with pytest.raises(ValueError, match=named) as info:
        TrustedProxies(entries)  # type: ignore[arg-type]
    assert "trusted_proxies" in str(info.value)


def test_trusting_everyone_is_allowed_but_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sqreen")
    everyone = TrustedProxies(["0.0.0.0/0"])
    assert resolve_client_ip("8.8.8.8", "6.6.6.6", everyone) == "6.6.6.6"
    assert any("every client can now choose its IP" in r.getMessage() for r in caplog.records)


def test_trusted_proxies_are_immutable() -> None:
    with pytest.raises(AttributeError):
        DEFAULT.networks = ()  # type: ignore[misc]


def test_ip_in_networks() -> None:
    nets = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
    assert ip_in_networks("10.1.2.3", nets)
    assert ip_in_networks("::ffff:10.1.2.3", nets)
    assert ip_in_networks("[2001:db8::5]:443", nets)
    assert not ip_in_networks("11.0.0.1", nets)
    assert not ip_in_networks("unknown", nets)
    assert not ip_in_networks("10.0.0.1", [])


# -- the untrusted-proxy warning ------------------------------------------------------------


@pytest.fixture
def fresh_warning(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    _ip_warnings._reset_warning()
    caplog.set_level(logging.WARNING, logger="sqreen")
    yield caplog


@pytest.mark.parametrize(
    ("peer", "header", "trusted", "expected"),
    [
        ("172.17.0.1", "1.2.3.4", DEFAULT, True),  # Docker bridge
        ("10.42.0.7", "1.2.3.4", DEFAULT, True),  # Kubernetes pod network
        ("100.64.3.4", "1.2.3.4", DEFAULT, True),  # carrier-grade NAT range
        ("fd00::5", "1.2.3.4", DEFAULT, True),
        ("fe80::5", "1.2.3.4", DEFAULT, True),
        ("::ffff:192.168.0.3", "1.2.3.4", DEFAULT, True),
        ("127.0.0.1", "1.2.3.4", TEN, True),  # loopback, not trusted any more
        (None, "1.2.3.4", TEN, True),  # a Unix socket, not trusted
        ("8.8.8.8", "1.2.3.4", DEFAULT, False),  # public peer: an attacker, not a proxy
        ("172.17.0.1", None, DEFAULT, False),
        ("172.17.0.1", "  ", DEFAULT, False),
        ("10.42.0.7", "1.2.3.4", TEN, False),  # trusted
        ("172.17.0.1", "1.2.3.4", NOBODY, False),  # trust nobody, on purpose
        (None, "1.2.3.4", DEFAULT, False),
        ("garbage", "1.2.3.4", DEFAULT, False),
    ],
)
def test_should_warn_untrusted_private(
    peer: str | None, header: str | None, trusted: TrustedProxies, expected: bool
) -> None:
    assert should_warn_untrusted_private(peer, header, trusted) is expected


def test_private_untrusted_peer_warns_exactly_once(
    fresh_warning: pytest.LogCaptureFixture,
) -> None:
    for _ in range(3):
        assert resolve_client_ip("172.17.0.1", "1.2.3.4", DEFAULT) == "172.17.0.1"
        maybe_warn_untrusted_proxy("172.17.0.1", "1.2.3.4", DEFAULT, "X-Forwarded-For")
    warn_untrusted_proxy_once("10.0.0.9", "X-Forwarded-For")
    records = [r for r in fresh_warning.records if r.name == "sqreen"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert records[0].levelno == logging.WARNING
    assert "172.17.0.1" in message and "X-Forwarded-For" in message
    assert "SQREEN_TRUSTED_PROXIES" in message and "trusted_proxies=" in message
    assert "10.0.0.0/8" in message


def test_public_peer_never_warns(fresh_warning: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        maybe_warn_untrusted_proxy("8.8.8.8", "1.2.3.4", DEFAULT, "X-Forwarded-For")
    assert not fresh_warning.records


def test_warning_is_once_across_threads(fresh_warning: pytest.LogCaptureFixture) -> None:
    barrier = threading.Barrier(8)

    def warn() -> None:
        barrier.wait()
        for _ in range(50):
            warn_untrusted_proxy_once("172.17.0.1", "X-Forwarded-For")

    threads = [threading.Thread(target=warn) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fresh_warning.records) == 1


# -- properties -----------------------------------------------------------------------------

ADDRESSES = [
    "203.0.113.9",
    "6.6.6.6",
    "127.0.0.1",
    "127.0.0.7",
    "10.0.0.5",
    "::1",
    "2001:db8::1",
    "::ffff:127.0.0.3",
    "::ffff:8.8.4.4",
]
HOP_TEXT = st.one_of(
    st.sampled_from(ADDRESSES),
    st.sampled_from(ADDRESSES).map(lambda a: f"[{a}]:80" if ":" in a else f"{a}:80"),
    st.sampled_from(["unknown", "_hidden", "", " ", "example.com", '"', "\\", ";", "="]),
    st.text(max_size=12),
)
PEERS = st.sampled_from([*ADDRESSES, "8.8.8.8", "10.9.9.9", "172.17.0.1"])
TRUSTED = st.sampled_from([DEFAULT, NOBODY, TEN, TrustedProxies(["127.0.0.1", "10.0.0.0/8"])])
HEADERS = st.sampled_from(["X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Client-IP"])


def _canonical(values: list[str]) -> set[str | None]:
    return {normalize_ip(v) for v in values}


@settings(max_examples=300, deadline=None)
@given(
    peer=PEERS,
    hops=st.lists(HOP_TEXT, max_size=8),
    trusted=TRUSTED,
    sep=st.sampled_from([",", ", ", " ,"]),
)
def test_xff_result_is_the_peer_or_a_hop(
    peer: str, hops: list[str], trusted: TrustedProxies, sep: str
) -> None:
    header = sep.join(hops)
    result = resolve_client_ip(peer, header, trusted)
    assert result in {normalize_ip(peer)} | _canonical(header.split(","))
    if peer not in trusted:
        assert result == normalize_ip(peer)


@settings(max_examples=300, deadline=None)
@given(peer=PEERS, hops=st.lists(HOP_TEXT, max_size=6), trusted=TRUSTED, params=st.booleans())
def test_forwarded_result_is_the_peer_or_a_for_value(
    peer: str, hops: list[str], trusted: TrustedProxies, params: bool
) -> None:
    elements = [f'for="{h}"' if i % 2 else f"for={h}" for i, h in enumerate(hops)]
    if params:
        elements = [f"proto=https;{e};by=_x" for e in elements]
    result = resolve_client_ip(peer, ", ".join(elements), trusted, "Forwarded")
    assert result in {normalize_ip(peer)} | _canonical(hops)
    if peer not in trusted:
        assert result == normalize_ip(peer)


@settings(max_examples=500, deadline=None)
@given(peer=PEERS, header_value=st.text(max_size=80), trusted=TRUSTED, header=HEADERS)
def test_any_header_text_from_an_untrusted_peer_gives_the_peer(
    peer: str, header_value: str, trusted: TrustedProxies, header: str
) -> None:
    result = resolve_client_ip(peer, header_value, trusted, header)
    if peer not in trusted:
        assert result == normalize_ip(peer)
    elif header in {"X-Forwarded-For", "X-Client-IP"}:
        assert result in {normalize_ip(peer)} | _canonical(header_value.split(","))
    else:
        assert result is None or ipaddress.ip_address(result)


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=60))
def test_normalize_ip_never_raises_and_is_stable(value: str) -> None:
    result = normalize_ip(value)
    if result is not None:
        assert normalize_ip(result) == result
        assert str(ipaddress.ip_address(result)) == result


# -- the silent-proxy warning ---------------------------------------------------------------


def _silent_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "a trusted proxy, without" in r.getMessage()]


def test_a_forged_header_does_not_silence_the_silent_proxy_warning(
    fresh_warning: pytest.LogCaptureFixture,
) -> None:
    """Behind a proxy that sends no header of its own (a bare ``proxy_pass``), a client's
    forged ``X-Forwarded-For`` reaches the app: one such request settled the check, and
    the misconfiguration was never reported."""
    _ip_warnings._reset()
    try:
        _ip_warnings.watch_peer("127.0.0.1", "6.6.6.6", DEFAULT, "X-Forwarded-For", False)
        for _ in range(SILENT_PROXY_EVENTS - 1):
            _ip_warnings.watch_peer("127.0.0.1", None, DEFAULT, "X-Forwarded-For", False)
        assert _silent_warnings(fresh_warning) == []
        _ip_warnings.watch_peer("127.0.0.1", None, DEFAULT, "X-Forwarded-For", False)
        (message,) = _silent_warnings(fresh_warning)
        assert message.startswith(f"sqreen: {SILENT_PROXY_EVENTS} of the first 21 events")
        for _ in range(50):  # once
            _ip_warnings.watch_peer("127.0.0.1", None, DEFAULT, "X-Forwarded-For", False)
        assert len(_silent_warnings(fresh_warning)) == 1
    finally:
        _ip_warnings._reset()


def test_a_proxy_that_sends_the_header_is_never_reported(
    fresh_warning: pytest.LogCaptureFixture,
) -> None:
    """The first events carry it; past them, events without it (a local job, a health check
    that tracks) are not counted."""
    _ip_warnings._reset()
    try:
        for n in range(WATCHED_EVENTS):
            header = None if n % 20 == 0 else "203.0.113.7"
            _ip_warnings.watch_peer("127.0.0.1", header, DEFAULT, "X-Forwarded-For", False)
        for _ in range(3 * SILENT_PROXY_EVENTS):
            _ip_warnings.watch_peer("127.0.0.1", None, DEFAULT, "X-Forwarded-For", False)
        assert _silent_warnings(fresh_warning) == []
    finally:
        _ip_warnings._reset()


def test_a_proxy_sending_the_header_for_one_client_is_not_reported_through_the_flusher(
    fresh_warning: pytest.LogCaptureFixture,
) -> None:
    """Through the real encoding: events repeating the last one's peer and header are
    served from a cache, and were then never counted as seen, so a correct nginx set-up
    with one client and a local job was reported after 20 of the job's events."""
    pytest.importorskip("flask")
    from flask import Flask, request

    import sqreen
    from sqreen.integrations.flask import Sqreen

    _ip_warnings._reset()
    app = Flask(__name__)
    app.config.update(SQREEN_TRANSPORT="memory:", SQREEN_CLIENT_IP_HEADER="X-Real-IP")
    Sqreen(app)

    @app.post("/login")
    def login() -> tuple[str, int]:
        request.sqreen.auth_track(False, username="alice")  # type: ignore[attr-defined]
        return "no", 401

    client = app.test_client()
    try:
        for n in range(1, 1001):
            local = n % 20 == 0  # a job on the host, not through the proxy: no header
            headers = {} if local else {"X-Real-IP": "203.0.113.7"}
            client.post("/login", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"})
            if n % 20 == 0:
                assert sqreen.flush(timeout=5)  # resolved on the flusher, in order
        assert _silent_warnings(fresh_warning) == []
    finally:
        sqreen.shutdown(timeout=1)
        _ip_warnings._reset()


def _public_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "looks like a proxy" in r.getMessage()]


@pytest.mark.parametrize(
    ("peer", "trusted", "clients", "said"),
    [
        ("45.33.70.1", DEFAULT, 5, True),  # a CDN's edge, untrusted: its clients are one
        ("2001:4860::8888", DEFAULT, 7, True),
        ("45.33.70.1", DEFAULT, 4, False),  # a few: a client may rotate forged headers
        ("45.33.70.1", TrustedProxies(["45.33.70.0/24"]), 9, False),  # trusted: believed
        ("45.33.70.1", NOBODY, 9, False),  # trusting nobody, on purpose
        ("10.0.0.5", DEFAULT, 9, False),  # private: the other warning's
        ("127.0.0.1", DEFAULT, 9, False),  # the trusted loopback proxy
    ],
)
def test_an_untrusted_public_peer_forwarding_for_many_clients_is_said_once(
    fresh_warning: pytest.LogCaptureFixture,
    peer: str,
    trusted: TrustedProxies,
    clients: int,
    said: bool,
) -> None:
    """A CDN or load balancer missing from ``trusted_proxies``: every client behind it was
    its address, silently, and one client's five failed logins blocked them all. The
    header is still not believed (a client can write it), only the set-up is said."""
    _ip_warnings._reset()
    try:
        for n in range(3 * clients):  # each client more than once
            hop = f"198.51.100.{n % clients + 1}"
            _ip_warnings.watch_peer(peer, hop, trusted, "X-Forwarded-For", False)
            assert trusted.client_ip(peer, hop, "X-Forwarded-For", False) in (peer, hop)
        found = _public_warnings(fresh_warning)
        if not said:
            assert found == []
            return
        (message,) = found
        assert message.startswith(f"sqreen: {normalize_ip(peer)}, not a trusted proxy")
        assert "SQREEN_TRUSTED_PROXIES" in message
        assert DEFAULT.client_ip(peer, "198.51.100.1", "X-Forwarded-For", False) == peer
        for n in range(50):  # once
            _ip_warnings.watch_peer(peer, f"203.0.113.{n}", trusted, "X-Forwarded-For", False)
        assert len(_public_warnings(fresh_warning)) == 1
    finally:
        _ip_warnings._reset()


def test_one_client_forging_the_header_is_not_said(
    fresh_warning: pytest.LogCaptureFixture,
) -> None:
    """An attacker writing his own ``X-Forwarded-For`` names himself (or a few), and the
    events past the first WATCHED_EVENTS are not looked at: no warning either way."""
    _ip_warnings._reset()
    try:
        for n in range(WATCHED_EVENTS):
            hop = f"192.0.2.{n % 4}"
            _ip_warnings.watch_peer("45.33.70.9", hop, DEFAULT, "X-Forwarded-For", False)
        for n in range(100):  # past the first WATCHED_EVENTS: not counted
            hop = f"198.51.100.{n}"
            _ip_warnings.watch_peer("45.33.70.9", hop, DEFAULT, "X-Forwarded-For", False)
        assert _public_warnings(fresh_warning) == []
    finally:
        _ip_warnings._reset()
