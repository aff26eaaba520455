"""Playbooks without a database: the file's checks, and the engine's windows on a clock."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

import pytest

from sqreen._wire_time import time_us
from sqreen.server.playbooks import (
    TEMPLATES,
    Engine,
    EventView,
    PlaybookError,
    Probe,
    is_exempt,
    parse_playbooks,
)
from sqreen.server.playbooks._alerts import alerts_for, new_alert
from sqreen.server.playbooks._bounds import Bounds
from sqreen.server.playbooks._hits import Hit
from sqreen.server.playbooks._memory import MemoryWindows
from sqreen.server.playbooks._views import wire_views
from sqreen.server.storage.model import from_us, to_us

S = 1_000_000  # a second in µs
NAMES: Final = frozenset({"auth.login.failure"})
T0 = 1_800_000_000 * S


class Feed:
    """Events through the templates, on a clock the test moves."""

    def __init__(self, text: str = TEMPLATES) -> None:
        self.windows = MemoryWindows(Engine(parse_playbooks(text)), is_exempt)
        self.now = T0
        self.seq = 0
        self.fired: list[tuple[str, str, int, int]] = []  # playbook, key, count, at seq

    def send(self, name: str, ip: str | None = "203.0.113.9", ago: float = 0, **user: Any) -> None:
        self.seq += 1
        event = EventView(
            seq=self.seq,
            name=name,
            ts_us=self.now - int(ago * S),
            ip=ip,
            user={k: str(v) for k, v in user.items()} or None,
            properties={},
            request={"path": "/login"},
        )
        for f in self.windows.run([event], self.now):
            self.fired.append((f.playbook.id, f.key, f.total, self.seq))

    def wait(self, seconds: float) -> None:
        self.now += int(seconds * S)


def test_brute_force_fires_at_the_fifth_failure_and_once() -> None:
    feed = Feed()
    for _ in range(4):
        feed.send("auth.login.failure", uid="1")
    assert not [f for f in feed.fired if f[0] == "brute-force-ip"]
    feed.send("auth.login.failure", uid="1")
    assert [f for f in feed.fired if f[0] == "brute-force-ip"] == [
        ("brute-force-ip", "203.0.113.9", 5, 5)
    ]
    for _ in range(20):
        feed.send("auth.login.failure", uid="1")
    assert len([f for f in feed.fired if f[0] == "brute-force-ip"]) == 1  # quiet while blocked


def test_failures_spread_over_the_window_do_not_fire() -> None:
    feed = Feed()
    for _ in range(12):
        feed.send("auth.login.failure", uid="1")
        feed.wait(76)  # four in any five minutes, never five
    assert not [f for f in feed.fired if f[0] == "brute-force-ip"]


def test_an_import_of_past_events_fires_nothing() -> None:
    feed = Feed()
    for i in range(50):
        feed.send("auth.login.failure", ago=3600 * 24, uid=str(i))
    assert feed.fired == []


def test_credential_stuffing_counts_distinct_users() -> None:
    feed = Feed()
    for i in range(7):
        feed.send("auth.login.failure", ip="198.51.100.7", uid=str(i))
        feed.send("auth.login.failure", ip="198.51.100.7", uid=str(i))  # one account twice
        feed.wait(100)
    fired = {f[0] for f in feed.fired}
    assert "credential-stuffing" not in fired
    feed.send("auth.login.failure", ip="198.51.100.7", uid="7")
    assert ("credential-stuffing", "198.51.100.7", 8, 15) in feed.fired  # 8 accounts, 15 tries


def test_password_spray_counts_users_however_many_tries_each() -> None:
    """Slowly (no 15 distinct users in 15 minutes for credential stuffing, no 10 tries of
    one account for brute-force-account): a third try on each account hid a spray from the
    template while it counted only the accounts tried at most twice."""
    feed = Feed()
    for i in range(9):  # nine users, three tries each, one every 76 s
        for _ in range(3):
            feed.send("auth.login.failure", ip="192.0.2.50", email=f"u{i}@example.com")
            feed.wait(76)
    assert "password-spray" not in {f[0] for f in feed.fired}
    feed.send("auth.login.failure", ip="192.0.2.50", email="u9@example.com")
    assert {f[0] for f in feed.fired} == {"password-spray"}


def test_max_per_value_counts_only_the_values_seen_at_most_that_often() -> None:
    """The narrower rule, for those who want it: ``max_per_value = 2``."""
    spray = TEMPLATES.replace("# max_per_value = 2", "max_per_value = 2")
    assert spray != TEMPLATES
    feed = Feed(spray)
    for _ in range(3):  # a user tried three times does not count
        feed.send("auth.login.failure", ip="192.0.2.50", email="many@example.com")
        feed.wait(70)
    for i in range(9):  # nine users, two tries each, slowly
        for _ in range(2):
            feed.send("auth.login.failure", ip="192.0.2.50", email=f"u{i}@example.com")
            feed.wait(70)
    assert "password-spray" not in {f[0] for f in feed.fired}
    feed.send("auth.login.failure", ip="192.0.2.50", email="u9@example.com")
    assert "password-spray" in {f[0] for f in feed.fired}


def test_account_takeover_is_a_success_after_failures() -> None:
    feed = Feed()
    for _ in range(10):
        feed.send("auth.login.failure", ip=None, uid="victim")
        feed.wait(30)
    feed.send("auth.login.success", ip=None, uid="victim")
    assert [f[:3] for f in feed.fired if f[0] == "account-takeover"] == [
        ("account-takeover", '{"uid":"victim"}', 10)
    ]
    other = Feed()
    for _ in range(10):
        other.send("auth.login.failure", ip=None, uid="victim")
        other.wait(120)  # twenty minutes of failures: the last ten minutes hold five
    other.send("auth.login.success", ip=None, uid="victim")
    assert "account-takeover" not in {f[0] for f in other.fired}


def test_a_failure_stored_after_an_alert_with_an_earlier_time_counts_for_the_next() -> None:
    """brute-force-account alerts on 10 failures; a failure stored after the alert whose own
    time is earlier than the alert's last (another process's commit, an app server's clock
    behind) was counted by no alert, so it counts for the next: with 9 more, 10 new ones
    came after the alert, and it alerts again. (It counted for nothing: the next alert
    needed an 11th.) Those the first alert counted never count again."""
    feed = Feed()
    for n in range(10):
        feed.send("auth.login.failure", ip=None, ago=60 - n, uid="victim")
    account = [f[:3] for f in feed.fired if f[0] == "brute-force-account"]
    assert account == [("brute-force-account", '{"uid":"victim"}', 10)]
    feed.send("auth.login.failure", ip=None, ago=55.5, uid="victim")  # late, stored after
    for n in range(8):
        feed.send("auth.login.failure", ip=None, ago=29 - n, uid="victim")
    assert len([f for f in feed.fired if f[0] == "brute-force-account"]) == 1  # 9 new
    feed.send("auth.login.failure", ip=None, ago=21, uid="victim")
    account = [f[:3] for f in feed.fired if f[0] == "brute-force-account"]
    assert account == [("brute-force-account", '{"uid":"victim"}', n) for n in (10, 10)]


def test_failures_from_a_clock_behind_alert_once_a_threshold_never_recounting() -> None:
    """An app server whose clock is a minute behind: its failures, stored after an alert on
    current ones, are each earlier than that alert's last event. Each counts once: 3 current
    then 8 late ones alert 3 times (3, 3 and 3 events, none twice), where marks kept as the
    greater (time, seq) pair alerted at every late failure from the third, recounting."""
    text = variant(events="['auth.login.failure']", group_by="'user'", threshold="3")
    text = text.replace("window = '1m'", "window = '1h'")
    windows = MemoryWindows(Engine(parse_playbooks(text)), is_exempt)
    fired: list[tuple[int, ...]] = []
    for seq, ago in enumerate([3, 2, 1, *range(60, 52, -1)], start=1):
        view = EventView(seq, "auth.login.failure", T0 - ago * S, None, {"u": "v"}, {}, None)
        fired += [f.seqs for f in windows.run([view], T0)]
    assert fired == [(1, 2, 3), (4, 5, 6), (7, 8, 9)]


def test_a_takeover_alerts_once_for_its_failures_not_at_every_later_success() -> None:
    """One brute force then the owner logging in again and again within the window, no
    failure since: the later successes raise nothing (each did, on the same failures). A
    success after new failures alerts again, on the window's."""
    feed = Feed()
    for _ in range(10):
        feed.send("auth.login.failure", ip=None, uid="bob")
        feed.wait(10)
    for _ in range(5):  # the takeover, then the owner's own logins
        feed.send("auth.login.success", ip=None, uid="bob")
        feed.wait(30)
    takeovers = [f[:3] for f in feed.fired if f[0] == "account-takeover"]
    assert takeovers == [("account-takeover", '{"uid":"bob"}', 10)]
    for _ in range(10):
        feed.send("auth.login.failure", ip=None, uid="bob")
        feed.wait(5)
    feed.send("auth.login.success", ip=None, uid="bob")
    takeovers = [f[:3] for f in feed.fired if f[0] == "account-takeover"]
    assert takeovers == [("account-takeover", '{"uid":"bob"}', n) for n in (10, 20)]


def test_a_success_in_the_middle_of_an_attack_does_not_spend_the_takeover_alert() -> None:
    """The owner logs in (or a key holder forges a success from the owner's address) in the
    middle of a brute force: that success alerts. The attacker fails twice more, then gets
    in: that alerts too, on the window's failures, not only the two after the first alert."""
    feed = Feed()
    for _ in range(12):
        feed.send("auth.login.failure", ip="198.51.100.77", uid="eve")
        feed.wait(5)
    feed.send("auth.login.success", ip="81.2.69.99", uid="eve")  # the owner's
    feed.wait(5)
    for _ in range(2):
        feed.send("auth.login.failure", ip="198.51.100.77", uid="eve")
        feed.wait(5)
    feed.send("auth.login.success", ip="198.51.100.77", uid="eve")  # the takeover
    takeovers = [f[2:] for f in feed.fired if f[0] == "account-takeover"]
    assert [count for count, _ in takeovers] == [12, 14]
    assert takeovers[-1][1] == feed.seq  # fired by the attacker's success


def takeover_view(seq: int, name: str, at: int, ip: str | None = None) -> EventView:
    return EventView(seq, name, at, ip, {"username": "carol"}, {}, {"path": "/login"})


def test_a_takeover_alert_holds_the_success_that_fired_it() -> None:
    """The firing of an ``after`` rule is the success itself: its last seq and time, the
    failures counted and then the success; a failure later than the success is not one
    the success came after. Pure: plan and decide, the hits handed over as a store would."""
    engine = Engine(parse_playbooks(TEMPLATES))
    failures = [takeover_view(n, "auth.login.failure", T0 + n * S) for n in range(1, 13)]
    success = takeover_view(13, "auth.login.success", T0 + 6 * 60 * S, "81.2.69.99")
    late = takeover_view(14, "auth.login.failure", T0 + 6 * 60 * S + 1)
    now = T0 + 6 * 60 * S + 2
    plan = engine.plan([*failures, success, late], now)
    hits: dict[Any, list[Hit]] = {}
    for row in plan.hits:
        hits.setdefault((row.stream, row.key), []).append(Hit(row.ts, row.seq, row.value))
    firings, _ = engine.decide(plan, hits, {}, now, is_exempt)
    (fired,) = [f for f in firings if f.playbook.id == "account-takeover"]
    assert fired.key == '{"username":"carol"}' and fired.total == 12  # the failures before it
    assert fired.seqs == (*range(1, 13), 13)  # oldest first, the success last; not 14
    assert (fired.first_seq, fired.last_seq) == (1, 13)
    assert (fired.first_us, fired.last_us) == (T0 + S, success.ts_us)
    assert fired.trigger == "auth.login.success"
    alert = new_alert(fired)
    assert alert is not None and alert.last_seq == 13 and alert.seqs[-1] == 13
    assert alert.summary == (
        "account-takeover: auth.login.success after 12 auth.login.failure in 10m "
        'for user={"username":"carol"}'
    )
    # Nine failures before the success, three after it: no takeover.
    early = takeover_view(15, "auth.login.success", T0 + 9 * S + S // 2)
    plan = engine.plan([*failures, early], now)
    firings, _ = engine.decide(plan, hits, {}, now, is_exempt)
    assert "account-takeover" not in {f.playbook.id for f in firings}


def test_the_backtest_dates_a_takeover_at_the_success() -> None:
    feed = Feed()
    windows = feed.windows
    fired = []
    for n in range(12):
        fired += windows.run([takeover_view(n + 1, "auth.login.failure", T0 + n * S)], T0 + n * S)
    at = T0 + 6 * 60 * S
    fired += windows.run([takeover_view(13, "auth.login.success", at, "81.2.69.99")], at)
    (takeover,) = [f for f in fired if f.playbook.id == "account-takeover"]
    assert (takeover.last_seq, takeover.last_us, takeover.seqs[-1]) == (13, at, 13)
    (alert,) = [a for a in alerts_for(fired) if a.playbook == "account-takeover"]
    assert alert.created_at == alert.last_at == from_us(at)
    assert alert.summary.startswith("account-takeover: auth.login.success after 12 ")


def test_loopback_and_exempt_ranges_are_never_blocked() -> None:
    text = TEMPLATES.replace(
        'id = "brute-force-ip"', 'id = "brute-force-ip"\nexempt_ips = ["10.0.0.0/8"]', 1
    )
    feed = Feed(text)
    for ip in ("127.0.0.1", "::1", "10.1.2.3"):
        for _ in range(10):
            feed.send("auth.login.failure", ip=ip, uid="1")
    assert not [f for f in feed.fired if f[0] == "brute-force-ip"]


def test_the_window_slides() -> None:
    feed = Feed()
    for _ in range(4):
        feed.send("auth.signup", ip="203.0.113.77", uid="x")
    feed.wait(601)
    feed.send("auth.signup", ip="203.0.113.77", uid="x")
    assert "signup-abuse" not in {f[0] for f in feed.fired}
    for _ in range(4):
        feed.send("auth.signup", ip="203.0.113.77", uid="x")
    assert "signup-abuse" in {f[0] for f in feed.fired}


BASE = """[[playbook]]
id = 'a'
events = ['x']
group_by = 'ip'
threshold = 1
window = '1m'
action = 'alert'
"""


def variant(**changes: str) -> str:
    """BASE with lines replaced (``key="value"``) or added (a key BASE does not have)."""
    lines = BASE.splitlines()
    for key, value in changes.items():
        for n, line in enumerate(lines):
            if line.startswith(f"{key} ="):
                lines[n] = f"{key} = {value}"
                break
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


BAD = [
    ("unknown field", variant(colour="'red'"), 8, "colour: unknown field"),
    ("bad duration", variant(window="'soon'"), 6, "window:"),
    ("threshold 0", variant(threshold="0"), 5, "threshold: must be an integer"),
    ("unknown action", variant(action="'nuke'"), 7, "action: 'nuke'"),
    ("not toml", "[[playbook]]\nid = 'a\n", 2, "not valid TOML"),
    ("missing field", "[[playbook]]\nid = 'a'\nevents = ['x']\n", 1, "group_by: missing"),
    ("duplicate id", BASE + BASE, 9, "used twice"),
    # An id refused for its length is said by its start, not echoed whole.
    ("long id", variant(id="'" + "x" * 10_000 + "'"), 2, "playbook '" + "x" * 64 + "...': id:"),
    (
        "block_ip on users",
        variant(group_by="'user'", action="'block_ip'", duration="'1h'"),
        4,
        "group_by: block_ip",
    ),
    ("unknown top key", "colour = 'red'\n", 1, "unknown key 'colour'"),
    ("bad field", variant(group_by="'password'"), 4, "group_by: 'password' is not a field"),
    ("bad notify", variant(notify="['ftp://x']"), 8, "notify:"),
    (
        "huge duration",
        variant(action="'block_ip'", duration="'" + "9" * 400 + "s'"),
        8,
        "duration:",
    ),
    (
        "no country",
        variant(where="{ 'ip.country' = 'Germany' }"),
        8,
        "where: ip.country: 'Germany' must be a two-letter country code (e.g. DE)",
    ),
    ("no asn", variant(where="{ 'ip.asn' = 'Google' }"), 8, "where: ip.asn: 'Google' must be"),
    # Values no event can have: a misspelt kind or an unreachable score would switch the
    # rule off without a word.
    (
        "no kind",
        variant(where="{ 'ip.kind' = ['tor', 'vpns'] }"),
        8,
        "where: ip.kind: 'vpns' must be a network kind: tor, vpn, hosting, cdn, bot, private",
    ),
    ("residential", variant(where="{ 'ip.kind' = 'residential' }"), 8, "'residential' must be"),
    ("score over 100", variant(where="{ 'ip.score' = 101 }"), 8, "'101' must be a threat score"),
    ("score not whole", variant(where="{ 'ip.score' = 50.5 }"), 8, "'50.5' must be a threat"),
    (
        "bound over 100",
        variant(where="{ 'ip.score' = { at_least = 101 } }"),
        8,
        "where: ip.score: at_least must be from 0 to 100",
    ),
    (
        "bound on a country",
        variant(where="{ 'ip.country' = { at_least = 3 } }"),
        8,
        "where: ip.country: at_least is for numbers (ip.score, ip.asn)",
    ),
    # One range said for a window, whatever is wrong with it.
    ("window 0", variant(window="'0s'"), 6, "window: must be positive and at most 30 days"),
    ("window 31d", variant(window="'31d'"), 6, "window: must be positive and at most 30 days"),
    # A name never matched an address.
    ("not an address", variant(where="{ ip = 'not-an-ip' }"), 8, "'not-an-ip' is not an IP"),
    ("bad network", variant(where="{ ip = '10.0.0.0/33' }"), 8, "'10.0.0.0/33' is not an IP"),
    # A whole user is its identifiers as JSON: a bare name never matched.
    ("a bare user", variant(where="{ user = 'alice' }"), 8, "where: user: 'alice' is not a user"),
    # A field written after the [playbook.where] header is TOML's key of that table: it was
    # said "group_by: missing", or "where: 'mode' is not a field" at the playbook's first line.
    (
        "a field under where",
        "[[playbook]]\nid = 'x'\nevents = ['a']\nthreshold = 3\nwindow = '5m'\n"
        "action = 'alert'\n[playbook.where]\n'request.path' = '/login'\ngroup_by = 'ip'\n",
        9,
        "playbook 'x': group_by is inside [playbook.where]: TOML puts every line after a "
        "table's header in that table; write group_by above the header",
    ),
    (
        "mode under where",
        "[[playbook]]\nid = 'x'\nevents = ['a']\ngroup_by = 'ip'\nthreshold = 3\n"
        "window = '5m'\naction = 'alert'\n[playbook.where]\nname = 'a'\nmode = 'monitor'\n",
        10,
        "playbook 'x': mode is inside [playbook.where]",
    ),
]


@pytest.mark.parametrize(("text", "line", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_file_names_its_line_and_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(PlaybookError) as info:
        parse_playbooks(text, "pb.toml")
    assert info.value.line == line, str(info.value)
    assert reason in str(info.value)
    assert str(info.value).startswith(f"pb.toml:{line}: ")


def test_the_templates_load_and_what_sdks_send_at_once() -> None:
    playbooks = parse_playbooks(TEMPLATES)
    assert [p.id for p in playbooks.playbooks] == [
        "brute-force-ip",
        "brute-force-account",
        "credential-stuffing",
        "password-spray",
        "account-takeover",
        "signup-abuse",
    ]
    assert playbooks.watched() == {"auth.login.failure", "auth.signup"}


def test_names_and_ip_fields_spelled_otherwise_read_as_events_store_them() -> None:
    """LiteSOC's other spellings are stored under the standard name, countries as upper-case
    codes, kinds in lower case, ASNs in decimal: a playbook (and the backtest, the same
    engine) reads what it names that way rather than never firing."""
    text = variant(
        events="['login.failure', 'AUTH_LOGIN_FAILURE', 'auth.login.failure']",
        where="{ name = 'auth_login_failure', 'ip.country' = ['gb', 'De'], 'ip.kind' = 'Tor', "
        "'ip.asn' = 'as20712' }",
        after="{ events = ['auth.login_success'], threshold = 1 }",
    )
    playbooks = parse_playbooks(text)
    (playbook,) = playbooks.playbooks
    assert playbook.events == ("auth.login.failure",)
    assert playbook.after is not None and playbook.after.events == ("auth.login.success",)
    assert [(str(path), sorted(values)) for path, values in playbook.where] == [
        ("name", ["auth.login.failure"]),
        ("ip.country", ["DE", "GB"]),
        ("ip.kind", ["tor"]),
        ("ip.asn", ["20712"]),
    ]
    simple = variant(events="['login.failure']", where="{ 'ip.country' = 'gb' }")
    windows = MemoryWindows(Engine(parse_playbooks(simple)), is_exempt)
    view = EventView(
        1, "auth.login.failure", T0, "81.2.69.160", None, {}, None, ip_info={"country": "GB"}
    )
    assert [f.key for f in windows.run([view], T0)] == ["81.2.69.160"]


@pytest.mark.parametrize("spelled", ["tor", "TOR", "Tor"])
def test_a_provider_in_where_matches_in_any_case(spelled: str) -> None:
    """A provider is a name (``Tor``, ``Andrews & Arnold Ltd``): ``where`` matches it in
    any case, as a country and a kind are, rather than never firing."""
    text = variant(events="['auth.login.failure']", where=f"{{ 'ip.provider' = '{spelled}' }}")
    windows = MemoryWindows(Engine(parse_playbooks(text)), is_exempt)
    tor, other = (
        EventView(n, "auth.login.failure", T0, ip, None, {}, None, ip_info=info)
        for n, ip, info in (
            (1, "185.220.101.1", {"kind": "tor", "provider": "Tor"}),
            (2, "8.8.8.8", {"kind": "hosting", "provider": "Google"}),
        )
    )
    assert [f.key for f in windows.run([tor, other], T0)] == ["185.220.101.1"]


def test_where_reads_identifiers_methods_and_addresses_as_events_hold_them() -> None:
    """``where`` on a user's identifier folds it as blocks and groups do, so that ``Admin``,
    ``ADMIN`` and ``admin `` do not slip past a playbook guarding ``admin`` (they are one
    user to a group and a block); a whole user is its identifiers as JSON in any order and
    case; ``post`` is POST; an address in any spelling is its canonical text."""

    def keys(where: str, views: list[EventView]) -> list[str]:
        text = variant(events="['auth.login.failure']", group_by="'ip'", where=where)
        windows = MemoryWindows(Engine(parse_playbooks(text)), is_exempt)
        return [f.key for f in windows.run(views, T0)]

    def failure(n: int, ip: str, method: str = "POST", **user: str) -> EventView:
        request = {"path": "/login", "method": method}
        return EventView(n, "auth.login.failure", T0, ip, user, {}, request)

    spellings = ["Admin", "ADMIN", "admin ", "\uff41dmin"]
    views = [failure(n, f"198.51.100.{n}", username=u) for n, u in enumerate(spellings, 1)]
    views.append(failure(9, "198.51.100.9", username="administrator"))
    expected = [f"198.51.100.{n}" for n in range(1, 5)]
    assert keys("{ 'user.username' = 'admin' }", views) == expected
    assert keys("{ 'user.username' = 'ADMIN' }", views) == expected
    both = [failure(1, "192.0.2.1", uid="7", email="Bob@Example.com")]
    assert keys("""{ user = '{"email": "bob@example.com", "uid": 7}' }""", both) == ["192.0.2.1"]
    assert keys("""{ user = '{"uid": "7"}' }""", both) == []  # all of them, as a group
    lower = [failure(1, "192.0.2.1", method="post"), failure(2, "192.0.2.2")]
    assert keys("{ 'request.method' = 'post' }", lower) == ["192.0.2.1", "192.0.2.2"]
    six = [failure(1, "2001:db8::1"), failure(2, "198.51.100.7")]
    assert sorted(keys("{ ip = ['2001:DB8:0::1', '::ffff:198.51.100.7'] }", six)) == [
        "198.51.100.7",
        "2001:db8::/64",
    ]
    # A network holds the addresses it matches (it matched nothing: a file written so kept
    # its other values, and now loads as it was meant).
    nets = [failure(1, "10.1.2.3"), failure(2, "192.0.2.7"), failure(3, "2001:db8::5")]
    nets.append(failure(4, "11.0.0.1"))
    where = "{ ip = ['10.0.0.0/8', '192.0.2.7', '2001:DB8::/32'] }"
    assert sorted(keys(where, nets)) == ["10.1.2.3", "192.0.2.7", "2001:db8::/64"]


def test_one_receiver_named_several_ways_is_notified_once() -> None:
    urls = [
        "http://127.0.0.1:20010/dn",
        "http://127.0.0.1:20010/dn",
        "HTTP://127.0.0.1:20010/dn",
        "http://127.0.0.1:20010/dn?",
        "https://Hooks.Example.com/x",
        "https://hooks.example.com:443/x",
        "https://hooks.example.com/x?team=2",
        "http://127.0.0.1:20010/dn#anchor",  # a fragment is never sent: the same receiver
    ]
    secret = "webhook_secret = 'a long enough secret for signing'\n"
    (playbook,) = parse_playbooks(secret + variant(notify=repr(urls))).playbooks
    assert playbook.notify == (
        "http://127.0.0.1:20010/dn",
        "https://Hooks.Example.com/x",
        "https://hooks.example.com/x?team=2",
    )
    with pytest.raises(PlaybookError, match="not an http"):
        parse_playbooks(secret + variant(notify="['http://h:99999/x']"))


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("htps://hooks.slack.com/services/T0/B0/SECRETPART", "htps://hooks.slack.com/..."),
        ("http://[::1/x?token=SECRETPART", "a URL that cannot be read"),
        ("https://u:SECRETPART@/x", "https:///..."),
        (5, "a value of type int"),
        ("xoxb-123456-SECRETPART:x", "a text that is no URL"),
        ("alertbot:SECRETPART@hooks.example.com/x", "a text that is no URL"),
    ],
)
def test_a_notify_url_refused_is_said_without_its_token(url: object, said: str) -> None:
    """A webhook's URL is often its secret (Slack's token is its path): a mistyped one is
    refused naming its scheme and host only, as failed posts are logged (the whole URL
    went to the log at every reload, and to `sqreen playbooks check`)."""
    secret = "webhook_secret = 'a long enough secret for signing'\n"
    with pytest.raises(PlaybookError) as caught:
        parse_playbooks(secret + variant(notify=json.dumps([url])))
    assert f"notify: not an http(s) URL: {said}" in str(caught.value)
    assert "SECRETPART" not in str(caught.value)


def test_bounds_leave_out_only_probes_that_cannot_reach_their_count() -> None:
    """A count remembered plus the hits added since bounds the count from above: a probe
    below it is left out; anything that could break the bound forgets it."""
    engine = Engine(parse_playbooks(TEMPLATES))
    bounds = Bounds()

    def probes(at: int, fresh: bool, hits: int = 1) -> list[Probe]:
        view = EventView(at, "auth.signup", at, "203.0.113.9", None, {}, {})
        plan = engine.plan([view] * hits, at)
        bounds.advance(plan.counts, at, fresh)
        return engine.probes(plan, at, {}, bounds.known)

    (probe,) = probes(T0, fresh=False)  # signup-abuse: 5 in 10 minutes; nothing known yet
    bounds.counted({probe: 2})
    assert probes(T0 + S, fresh=True) == []  # at most 2 + 1 < 5: left out
    (probe,) = probes(T0 + 2 * S, fresh=True, hits=2)  # 3 + 2: could be 5
    bounds.counted({probe: 1})  # the window moved on: counted again, lower
    assert probes(T0 + 3 * S, fresh=True) == []
    (probe,) = probes(T0 + 4 * S, fresh=False)  # someone else wrote
    bounds.counted({probe: 1})
    (probe,) = probes(T0 + 3 * S, fresh=True)  # the clock went back
    bounds.counted({probe: 1})
    assert probes(T0 + 5 * S, fresh=True, hits=2) == []
    assert probes(T0 + 6 * S, fresh=True, hits=2) != []


def test_a_key_first_met_is_not_probed_when_its_window_holds_only_hits_added_here() -> None:
    """Once the store said how new its newest hit was (none: an empty table), a window
    beginning after that holds only the hits this process added: a key first met with fewer
    than a threshold is left out, one with as many is probed; anybody else writing, or an
    older hit in the window, makes it counted again."""
    engine = Engine(parse_playbooks(TEMPLATES))
    bounds = Bounds()

    def probes(at: int, fresh: bool, ip: str, hits: int = 1) -> list[Probe]:
        view = EventView(at, "auth.signup", at, ip, None, {}, {})
        plan = engine.plan([view] * hits, at)
        bounds.advance(plan.counts, at, fresh)
        return engine.probes(plan, at, {}, bounds.known, bounds.unseen)

    assert probes(T0, fresh=False, ip="203.0.113.1") != []  # nothing said: counted
    bounds.horizon(None)  # somebody else wrote, and the table holds no hit
    assert probes(T0 + S, fresh=False, ip="203.0.113.2") == []  # 1 < 5: left out
    assert probes(T0 + 2 * S, fresh=True, ip="203.0.113.3", hits=4) == []
    assert probes(T0 + 3 * S, fresh=True, ip="203.0.113.3") != []  # 5 added: could be 5
    bounds.horizon(T0 + 3 * S)  # somebody else wrote a hit as new as now
    assert probes(T0 + 4 * S, fresh=False, ip="203.0.113.4") != []  # in signup-abuse's 10 min
    assert probes(T0 + 11 * 60 * S, fresh=True, ip="203.0.113.5") == []  # beyond them
    assert probes(T0 + 12 * 60 * S, fresh=False, ip="203.0.113.6") != []  # nothing said


def test_wire_times_read_from_a_remembered_second_equal_the_parsed_ones() -> None:
    """A batch's times are read as the second's µs (remembered) plus the fraction's digits:
    the same µs as parsing each; other ISO forms are parsed."""
    for text in (
        "2026-12-02T09:38:44.000001Z",
        "2026-12-02T09:38:44.999999Z",  # the same second, remembered
        "1970-01-01T00:00:00.000000Z",
        "2026-12-02T09:38:44+01:00",
        "2026-12-02T09:38:44.5+00:00",
        "2026-12-02T10:38:44.123456+01:00",  # 27 characters, not the wire's form
    ):
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert time_us(text) == to_us(parsed), text
        assert time_us(text) == to_us(parsed), text  # again, once remembered


def test_wire_views_are_the_new_events_of_the_names_read_never_later_than_received() -> None:
    def wire(name: str, at: str, ip: str | None) -> Any:
        request = None if ip is None else {"ip": ip, "path": "/login"}
        return {"name": name, "timestamp": at, "request": request, "user": {"id": "7"},
                "properties": {}}  # fmt: skip

    events = [
        wire("auth.login.failure", "2026-12-02T09:38:44.000001Z", "203.0.113.9"),
        wire("auth.login.failure", "2026-12-02T09:38:45.000000Z", None),  # not new
        wire("app.page", "2026-12-02T09:38:45.000000Z", "203.0.113.9"),  # no playbook's
        wire("auth.login.failure", "2030-01-01T00:00:00.000000Z", "x" * 65),  # skewed clock
    ]
    received = time_us("2026-12-02T09:38:46.000000Z")
    extra = [{"ip_info": {"country": "FR"}}, {}, {}, {}]
    views = wire_views(events, [11, None, 13, 14], extra, received, "shop", NAMES)
    assert [(v.seq, v.ts_us, v.ip, v.app) for v in views] == [
        (11, received - 1_999_999, "203.0.113.9", "shop"),
        (14, received, None, "shop"),  # an address too long to be one
    ]
    assert views[0].ip_info == {"country": "FR"} and views[1].ip_info is None


def test_a_webhook_s_host_is_said_in_visible_characters() -> None:
    from sqreen._text import visible
    from sqreen.server.playbooks._values import shown

    assert shown("http://ho\x1bst/x?t=SECRET") == visible("http://ho\x1bst") + "/..."
    assert "\u202e" not in shown("http://h\u202eost/")
