"""Webhooks are signed, always, with the secret in force: a file with ``notify`` and no
secret is refused (an unsigned post is one anybody who can reach the receiver can forge), and
a secret edited in the file signs the next post once the file is re-read (a leaked secret is
rotated without a restart)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest

from sqreen.server.playbooks import (
    Notifier,
    PlaybookError,
    PlaybookSource,
    parse_playbooks,
    sign,
    verify_signature,
)

from .webhook_receiver import WebhookReceiver

RULE = """
[[playbook]]
id = "brute-force-ip"
events = ["auth.login.failure"]
group_by = "ip"
threshold = 5
window = "5m"
action = "alert"
notify = ["https://hooks.example.com/x"]
"""


def test_notify_without_a_secret_is_refused_at_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SQREEN_WEBHOOK_SECRET", raising=False)
    with pytest.raises(PlaybookError) as caught:
        parse_playbooks(RULE, "pb.toml")
    assert caught.value.line == 9
    assert "notify: its posts are signed" in str(caught.value)
    assert "webhook_secret" in str(caught.value) and "SQREEN_WEBHOOK_SECRET" in str(caught.value)
    assert parse_playbooks('webhook_secret = "s"\n' + RULE).webhook_secret == "s"
    monkeypatch.setenv("SQREEN_WEBHOOK_SECRET", "from-env")
    assert parse_playbooks(RULE).playbooks[0].notify == ("https://hooks.example.com/x",)
    no_notify = RULE.replace('notify = ["https://hooks.example.com/x"]\n', "")
    monkeypatch.delenv("SQREEN_WEBHOOK_SECRET")
    assert parse_playbooks(no_notify).webhook_secret is None  # nothing posted: no secret needed


def test_an_edited_secret_signs_the_next_post_once_the_file_is_reread(tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    path = tmp_path / "pb.toml"
    path.write_text(
        'webhook_secret = "first"\n' + RULE.replace("https://hooks.example.com/x", receiver.url)
    )
    source = PlaybookSource(path)
    # As the collector builds it (app.py): the secret in force, read at each post.
    notifier = Notifier(lambda: source.playbooks.webhook_secret, backoff=0.01)
    try:
        notifier.submit((receiver.url,), {"alert": {"id": 1}})
        assert notifier.join(10)
        path.write_text('webhook_secret = "rotated"\n' + path.read_text().split("\n", 1)[1])
        assert source.check(force=True)
        notifier.submit((receiver.url,), {"alert": {"id": 2}})
        assert notifier.join(10)
    finally:
        notifier.close()
        receiver.close()
    (first, first_sig), (second, second_sig) = receiver.received
    assert first_sig and second_sig
    assert verify_signature("first", first, first_sig)
    assert not verify_signature("rotated", first, first_sig)
    assert verify_signature("rotated", second, second_sig)
    assert not verify_signature("first", second, second_sig)
    # The README's recipe, for a receiver not written in Python.
    fields = dict(part.split("=", 1) for part in second_sig.split(","))
    mac = hmac.new(b"rotated", fields["t"].encode() + b"." + second, hashlib.sha256)
    assert hmac.compare_digest(mac.hexdigest(), fields["v1"])
    assert abs(time.time() - int(fields["t"])) < 300
    assert json.loads(second) == {"alert": {"id": 2}}


def test_the_collector_signs_with_the_file_s_secret_in_force(tmp_path: Path) -> None:
    from sqreen.server.app import create_app
    from sqreen.server.storage import open_storage

    path = tmp_path / "pb.toml"
    path.write_text('webhook_secret = "first"\n' + RULE)
    storage = open_storage(str(tmp_path / "db.sqlite"))
    try:
        app = create_app(storage, playbooks=PlaybookSource(path))
        notifier = app.state.notifier
        secret = notifier.secret() if callable(notifier.secret) else notifier.secret
        assert secret == "first"
        path.write_text('webhook_secret = "rotated"\n' + RULE)
        assert app.state.playbooks.check(force=True)
        assert notifier.secret() == "rotated"  # read at each post, not fixed at start
    finally:
        storage.close()


@pytest.mark.parametrize(
    "header",
    [None, "", "t=,v1=", "v1=abc", "t=1_0,v1=x", "t= 10,v1=x", "t=\u0663,v1=x", b"\xff\xfe", 7],
)
def test_verify_signature_answers_false_to_whatever_a_sender_writes(header: object) -> None:
    """A receiver written from the README answers a forged or unsigned post with False, not
    a 500 (None, what ``headers.get()`` gives without the header, raised AttributeError)."""
    assert verify_signature("s", b"{}", header) is False  # type: ignore[arg-type]


def test_verify_signature_with_a_non_ascii_mac_is_false_not_an_error() -> None:
    now = 1_700_000_000
    assert verify_signature("s", b"{}", sign("s", b"{}", now), now=now)
    assert not verify_signature("s", b"{}", f"t={now},v1=\u00e9", now=now)
    assert verify_signature("s", b"{}", sign("s", b"{}", now).encode(), now=now)
