"""The block service: the rules every block goes through, whoever creates it."""

from __future__ import annotations

from datetime import timedelta
from types import MappingProxyType

import pytest

from sqreen.server.blocks import (
    BlockRequest,
    BlockService,
    InvalidBlock,
    block_from_json,
    block_request,
    ip_block,
    parse_block_id,
    user_block,
)
from sqreen.server.storage import Storage

from .conftest import Clock


@pytest.fixture
def blocks(sqlite_storage: Storage) -> BlockService:
    return BlockService(sqlite_storage)


def test_a_programmatic_caller_blocks_with_typed_arguments(
    blocks: BlockService, clock: Clock
) -> None:
    """What a playbook does: typed values in, a stored block out, in the action set."""
    user = blocks.create(
        user_block(
            MappingProxyType({"uid": "42"}),
            duration=timedelta(minutes=15),
            reason="10 failed logins in 1 min",
        ),
        created_by="playbook:7",
    )
    ip = blocks.create(ip_block("203.0.113.77/24", duration=3600), created_by="playbook:7")
    assert (user.user, user.created_by, user.reason) == (
        {"uid": "42"},
        "playbook:7",
        "10 failed logins in 1 min",
    )
    assert user.expires_at == user.created_at + timedelta(minutes=15)
    assert (ip.ip, ip.expires_at) == ("203.0.113.0/24", ip.created_at + timedelta(hours=1))
    actions = blocks.store.action_set()
    assert actions.version == 2 and [b.id for b in actions.blocks] == [user.id, ip.id]
    lifted = blocks.lift(user.id, lifted_by="playbook:7")
    assert lifted is not None and lifted.lifted_by == "playbook:7"
    assert blocks.lift(user.id, lifted_by="playbook:7") is None
    clock.advance(hours=2)
    assert blocks.lift(ip.id, lifted_by="playbook:7") is None  # expired: nothing to lift
    assert blocks.store.action_set().version == 3


def test_requests_are_validated_before_anything_is_stored(blocks: BlockService) -> None:
    with pytest.raises(InvalidBlock, match=r"^user: a user block needs at least one") as exc:
        blocks.create(user_block({}), created_by="playbook:1")
    assert exc.value.field == "user"
    with pytest.raises(InvalidBlock, match=r"^ip: /8 is too wide"):
        blocks.create(ip_block("10.0.0.0/8"), created_by="playbook:1")
    with pytest.raises(InvalidBlock, match="too wide"):  # built by hand: checked all the same
        blocks.create(BlockRequest("block_ip", ip="0.0.0.0/0"), created_by="playbook:1")
    with pytest.raises(ValueError, match="created_by"):
        blocks.create(ip_block("192.0.2.1"), created_by="")
    assert blocks.store.list_blocks(ended=100) == []


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"type": "block_user", "user": {"uid": ""}}, "user.uid", "values must be 1 to"),
        ({"type": "block_user", "user": {"uid": [4]}}, "user.uid", "values must be text"),
        # Identifiers are compared stripped: a block on spaces would match nobody.
        ({"type": "block_user", "user": {"uid": " \t "}}, "user.uid", "only spaces"),
        ({"type": "block_user", "user": {"a": "1", "b": "  "}}, "user.b", "only spaces"),
        # Python reads a zone into the network; no SDK does, so none would enforce it.
        ({"type": "block_ip", "ip": "fe80::1%eth0"}, "ip", "an IPv6 zone"),
        ({"type": "block_ip", "ip": "2001:db8:1::%x/48"}, "ip", "an IPv6 zone"),
        ({"type": "block_user", "user": "uid=42"}, "user", "must be a dict"),
        ({"type": "block_ip", "ip": "2001:db8::/47"}, "ip", "/47 is too wide"),
        # Each NAT64 address is an IPv4 client's (the SDK enforces IPv4 blocks on them): the
        # /96 would be every IPv4 client of a site behind a translator.
        ({"type": "block_ip", "ip": "64:ff9b::/96"}, "ip", "more than a /16 of IPv4 clients"),
        ({"type": "block_ip", "ip": "64:ff9b:1::/48"}, "ip", "/112 or narrower"),
        ({"type": "block_ip", "ip": "64:ff9b::/48"}, "ip", "/112 or narrower"),
        ({"type": "block_ip", "ip": "64:ff9b::c000:0/111"}, "ip", "/112 or narrower"),
        ({"type": "block_ip", "ip": "::ffff:192.0.2.1"}, "ip", "write IPv4-mapped"),
        ({"type": "block_ip", "ip": None}, "ip", "must be an IP address"),
        ({"type": "block_ip", "ip": "192.0.2.1", "duration": 0}, "duration", "must be positive"),
        ({"type": "block_ip", "ip": "192.0.2.1", "duration": True}, "duration", "not a duration"),
        (
            {"type": "block_ip", "ip": "192.0.2.1", "duration": timedelta(days=4000)},
            "duration",
            "at most 3650 days",
        ),
        ({"type": "block_ip", "ip": "192.0.2.1", "reason": 3}, "reason", "must be a string"),
        ({"type": "block_host", "ip": "192.0.2.1"}, "type", "must be 'block_user' or"),
    ],
)
def test_each_rule_names_its_field(kwargs: dict[str, object], field: str, message: str) -> None:
    kind = kwargs.pop("type")
    with pytest.raises(InvalidBlock) as exc:
        block_request(kind, **kwargs)
    assert exc.value.field == field
    assert message in exc.value.message and str(exc.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("network", "loopback"),
    [
        ("127.0.0.1", "127.0.0.0/8"),
        ("127.0.0.1/32", "127.0.0.0/8"),
        ("127.255.0.0/16", "127.0.0.0/8"),
        ("::1", "::1/128"),
        ("::/48", "::1/128"),
    ],
)
def test_a_block_covering_loopback_is_refused_and_says_why(network: str, loopback: str) -> None:
    """Every SDK trusts loopback as a proxy by default and refuses such a block: the
    collector must not report it created."""
    with pytest.raises(InvalidBlock) as exc:
        ip_block(network)
    assert exc.value.field == "ip"
    assert f"covers loopback ({loopback})" in exc.value.message
    assert "trusts loopback as a proxy" in exc.value.message


@pytest.mark.parametrize("network", ["126.255.255.255", "128.0.0.0/16", "::2", "2001:db8::1"])
def test_networks_next_to_loopback_are_fine(network: str) -> None:
    assert ip_block(network).ip is not None


def test_requests_keep_what_was_asked() -> None:
    assert user_block({"uid": "42", "n": 7}, duration="1h", reason="r") == BlockRequest(  # type: ignore[dict-item]
        "block_user", user={"uid": "42", "n": "7"}, duration=timedelta(hours=1), reason="r"
    )
    assert ip_block(" 2001:db8::7/48 ") == BlockRequest("block_ip", ip="2001:db8::/48")
    assert block_from_json({"type": "block_ip", "ip": "192.0.2.9", "reason": None}) == (
        BlockRequest("block_ip", ip="192.0.2.9/32")
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body: must be a JSON object"),
        ({"type": "block_ip", "by": 1}, "body: unknown keys ['by']"),
    ],
)
def test_the_json_spelling_refuses_other_shapes(body: object, message: str) -> None:
    with pytest.raises(InvalidBlock) as exc:
        block_from_json(body)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", 12),
        ("007", 7),
        ("9" * 18, int("9" * 18)),
        ("9" * 19, None),
        ("", None),
        ("-1", None),
        ("1.0", None),
        (" 1", None),
        ("١٢", None),  # Arabic-Indic digits: str.isdigit() says yes
    ],
)
def test_parse_block_id(text: str, expected: int | None) -> None:
    assert parse_block_id(text) == expected


def test_blocks_made_before_migration_13_are_found_by_their_target(
    db_url: str, clock: Clock
) -> None:
    """Placing a block looks the active one on its target up by an index (migration 13);
    the blocks stored before have their target filled in, so the same block placed again
    extends them rather than making a second."""
    from sqreen.server.storage import open_storage
    from sqreen.server.storage.postgres import PostgresStorage
    from sqreen.server.storage.sqlite import SQLiteStorage

    current = PostgresStorage if db_url.startswith("postgres") else SQLiteStorage
    schema_12 = type("Schema12", (current,), {"MIGRATIONS": current.MIGRATIONS[:12]})
    old = schema_12(db_url)
    assert old.migrate() == 12
    with old._write() as cur:
        for type_, user_json, ip in (
            ("block_ip", None, "203.0.113.0/24"),
            ("block_user", '{"uid": "42"}', None),
            ("block_user", '{"uid": "7", "email": "a@example.com"}', None),
        ):
            cur.execute(
                "INSERT INTO blocks (type, user_json, ip, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (type_, user_json, ip, 0, None),
            )
    old.close()
    storage = open_storage(db_url, clock=clock)
    try:
        service = BlockService(storage)
        day = timedelta(days=1)
        for wanted in (
            ip_block("203.0.113.9/24", duration=day),
            user_block({"uid": "42"}, duration=day),
            user_block({"uid": "7", "email": "a@example.com"}, duration=day),
        ):
            assert service.apply(wanted, created_by="cli:test").outcome == "kept"
        # Identifiers in another order are the same user: one block, new or old.
        made = service.apply(user_block({"a": "1", "b": "2"}), created_by="cli:test")
        again = service.apply(user_block({"b": "2", "a": "1"}), created_by="cli:test")
        assert (made.outcome, again.outcome, again.block.id) == ("created", "kept", made.block.id)
        assert len(storage.list_blocks()) == 4
    finally:
        storage.close()


def test_a_person_extending_a_block_gives_it_their_reason_or_says_whose_it_was(
    sqlite_storage: Storage,
) -> None:
    """Extending a block by hand with a reason keeps that reason (it was dropped without a
    word); adopting a playbook's block without one names the playbook (its reason stood
    under the person's name); a playbook extending its own block keeps the reason."""
    store = sqlite_storage
    hour, day = timedelta(hours=1), timedelta(days=1)
    made = store.create_block(
        "block_ip",
        ip="192.0.2.77/32",
        duration=hour,
        reason="5 sign-ups",
        created_by="playbook:signup-abuse",
    )
    again = store.create_block(
        "block_ip",
        ip="192.0.2.77/32",
        duration=2 * hour,
        reason="6 sign-ups",
        created_by="playbook:signup-abuse",
    )
    assert again.id == made.id and again.reason == "5 sign-ups"
    adopted = store.create_block(
        "block_ip", ip="192.0.2.77/32", duration=day, created_by="cli:root"
    )
    assert adopted.id == made.id and adopted.created_by == "cli:root"
    assert adopted.reason == "first blocked by playbook:signup-abuse: 5 sign-ups"
    mine = store.create_block(
        "block_ip", ip="192.0.2.77/32", duration=2 * day, reason="mine", created_by="cli:root"
    )
    assert mine.id == made.id and mine.reason == "mine"
