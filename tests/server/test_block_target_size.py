"""A block's target is indexed: one too large for the index (a user whose identifiers grow
when folded) is refused up front, on both back ends, and its alert stored without it; the
other alerts and blocks of the same body are stored (on PostgreSQL the index's error rolled
back the whole transaction, every alert of the body with it)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sqreen._blocking import fold_identifier
from sqreen.server.blocks import user_block
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.playbooks import PlaybookRunner, PlaybookSource
from sqreen.server.storage import MAX_TARGET_BYTES, Storage, block_target

from .conftest import envelope, wire_event

#: NFKC makes 18 characters of U+FDFA (escaped in the target's JSON: 6 bytes each).
GROWS = "\ufdfa" * 256
#: Characters that NFKC makes 4 or more of, in an order PostgreSQL cannot compress away.
EXPANDING = [chr(c) for c in range(0x80, 0xD800) if len(fold_identifier(chr(c))) >= 4]
_RNG = random.Random(1)
LONG_USER = {f"k{n}": "".join(_RNG.choices(EXPANDING, k=256)) for n in range(4)}


def test_a_user_too_large_once_folded_is_refused_up_front() -> None:
    assert len(fold_identifier(GROWS)) == 256 * 18
    for user in ({"username": GROWS}, LONG_USER):
        assert len(block_target("block_user", None, user)) > MAX_TARGET_BYTES
        with pytest.raises(ValueError, match="once folded"):
            user_block(user)
    # As large as it may be: the longest user a block holds is blocked, as before.
    name = "\ufdfa" * 15
    assert len(block_target("block_user", None, {"username": name})) <= MAX_TARGET_BYTES
    assert user_block({"username": name}).user == {"username": name}


def test_an_unblockable_user_does_not_sink_the_others_alerts(
    storage: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "p.toml").write_text(
        '[[playbook]]\nid = "lock"\nevents = ["auth.login.failure"]\ngroup_by = "user"\n'
        'threshold = 3\nwindow = "5m"\naction = "block_user"\nduration = "1h"\n'
    )
    pipeline = IngestPipeline(
        storage, hooks=[PlaybookRunner(storage, PlaybookSource(tmp_path / "p.toml"))]
    )
    at = storage.now().isoformat().replace("+00:00", "Z")
    events = [wire_event(user=dict(LONG_USER), timestamp=at) for _ in range(3)]
    events += [wire_event(user={"username": "alice"}, timestamp=at) for _ in range(3)]
    with caplog.at_level("WARNING", "sqreen.server"):
        pipeline(json.dumps(envelope(events)).encode())

    alerts = {"alice" in a.group_key: a for a in storage.list_alerts(playbook="lock")}
    assert len(alerts) == 2
    assert alerts[True].block_id is not None  # alice's
    assert alerts[False].block_id is None
    assert [b.user for b in storage.list_blocks()] == [{"username": "alice"}]
    assert any("no block for" in r.getMessage() for r in caplog.records)
