"""The users playbooks count: the spellings an app takes for one account are one user, as
for blocks (``fold_identifier``), so that an attacker cannot spread tries over them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sqreen._blocking import Blocklist, fold_identifier
from sqreen._client_ip import TrustedProxies
from sqreen.server.app import create_app
from sqreen.server.playbooks import TEMPLATES, PlaybookSource

from .conftest import Collector, envelope, wire_event
from .test_playbook_engine import Feed

FULLWIDTH_BOB = "\uff42\uff4f\uff42@example.com"
SPELLINGS = ["Bob@Example.com", "bob@example.com ", " BOB@example.COM", FULLWIDTH_BOB]


def fired(feed: Feed, playbook: str) -> list[tuple[str, int]]:
    return [(key, total) for pid, key, total, _ in feed.fired if pid == playbook]


def test_failures_over_spellings_of_one_account_count_together() -> None:
    feed = Feed()
    for n in range(10):  # from ten addresses, each spelling the account its own way
        feed.send("auth.login.failure", ip=f"203.0.113.{n}", email=SPELLINGS[n % 4])
    assert fired(feed, "brute-force-account") == [('{"email":"bob@example.com"}', 10)]
    feed.send("auth.login.success", ip="198.51.100.1", email="bob@example.com")
    assert fired(feed, "account-takeover") == [('{"email":"bob@example.com"}', 10)]


def test_distinct_users_are_counted_folded() -> None:
    # Credential stuffing counts distinct users: spellings of one are one, not fifteen.
    feed = Feed()
    for n in range(15):
        feed.send("auth.login.failure", ip="203.0.113.50", email=SPELLINGS[n % 4] + " " * n)
    assert fired(feed, "credential-stuffing") == []


def test_an_exempt_user_is_exempt_in_any_spelling() -> None:
    text = TEMPLATES.replace(
        'id = "brute-force-account"',
        'id = "brute-force-account"\nexempt_users = [{ email = "Bob@Example.com" }]',
        1,
    )
    feed = Feed(text)
    for n in range(12):
        feed.send("auth.login.failure", ip=f"203.0.113.{n}", email=SPELLINGS[n % 4])
    assert fired(feed, "brute-force-account") == []


def test_a_block_holds_for_every_spelling_of_its_user() -> None:
    blocklist = Blocklist(TrustedProxies(None))
    blocklist.apply(
        {
            "version": 1,
            "items": [{"id": "b", "type": "block_user", "user": {"email": "bob@example.com"}}],
        }
    )
    for spelling in SPELLINGS:
        assert blocklist.user_block({"email": spelling}) is not None, spelling
    assert blocklist.user_block({"email": "bobby@example.com"}) is None
    assert blocklist.user_block({"email": "bob\u200b@example.com"}) is None  # another text


def test_fold_identifier() -> None:
    assert fold_identifier(" Bob@Example.COM\t") == "bob@example.com"
    assert fold_identifier(FULLWIDTH_BOB) == "bob@example.com"
    assert fold_identifier("Stra\u00dfe") == "strasse"  # case folding, not lower()
    assert fold_identifier("\u2460") == "1"  # compatibility forms


@pytest.mark.parametrize("group_by", ["user", "user.username"])
def test_a_playbook_blocks_a_user_whose_identifier_grows_when_folded(
    collector: Collector, live_app: Any, tmp_path: Path, group_by: str
) -> None:
    # NFKC makes 18 characters of U+FDFA: folded, 15 of them are 270, past the 256 an
    # identifier holds, and the block of the folded key was refused.
    name = "\ufdfa" * 15
    assert len(fold_identifier(name)) == 270
    switch, _ = live_app
    (tmp_path / "playbooks.toml").write_text(
        f'[[playbook]]\nid = "lock"\nevents = ["auth.login.failure"]\ngroup_by = "{group_by}"\n'
        'threshold = 3\nwindow = "5m"\naction = "block_user"\nduration = "1h"\n'
    )
    source = PlaybookSource(tmp_path / "playbooks.toml")
    switch.app = create_app(collector.storage, key_cache_ttl=0.2, playbooks=source)
    events = [
        wire_event(user={"username": spelling}) for spelling in (name, f" {name}", f"{name}\t")
    ]
    assert collector.post("/v1/events", envelope(events)).status_code == 200
    (alert,) = collector.storage.list_alerts(playbook="lock")
    assert alert.block_id is not None, alert.summary

    blocklist = Blocklist(TrustedProxies(None))  # as an SDK receives it
    blocklist.apply(collector.client.get(collector.url + "/v1/actions").json()["actions"])
    assert blocklist.user_block({"username": name}) is not None
    assert blocklist.user_block({"username": name + " "}) is not None
    assert blocklist.user_block({"username": name[:-1]}) is None
