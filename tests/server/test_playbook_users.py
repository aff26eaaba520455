"""The users playbooks count: the spellings an app takes for one account are one user, as
for blocks (``fold_identifier``), so that an attacker cannot spread tries over them."""

from __future__ import annotations

from sqreen._blocking import Blocklist, fold_identifier
from sqreen._client_ip import TrustedProxies
from sqreen.server.playbooks import TEMPLATES

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
