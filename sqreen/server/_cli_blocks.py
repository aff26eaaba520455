"""``sqreen block``, ``sqreen unblock`` and ``sqreen blocks``."""

from __future__ import annotations

import getpass
import ipaddress
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import click

from .._blocking import fold_identifier
from .._text import pair, visible
from ._cli_common import EnvOption, db_option, json_line, opened, pairs, when
from .blocks import (
    ENDED_LISTED,
    MAX_ACTIVE_BLOCKS,
    MAX_ENDED_LISTED,
    BlockLimitReached,
    BlockService,
    InvalidBlock,
    block_request,
    block_warnings,
    parse_block_id,
    parse_network,
)
from .storage import Block, ControlStore, PlacedBlock

__all__ = ["block", "blocks", "max_blocks_option", "unblock"]


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


#: The command-line spelling of each field a block can be refused for.
_PARAMS: Final = {"ip": "NETWORK", "duration": "--for", "reason": "--reason"}


def _create(db: str, type: str, max_blocks: int, **fields: Any) -> None:
    """Validate and place a block (a new one, or the active one on the same target extended),
    and say what it did, with a warning on stderr for a block that SDKs may not enforce as
    meant; a refusal is a usage error naming the field."""
    try:
        wanted = block_request(type, **fields)
    except InvalidBlock as exc:
        hint = _PARAMS.get(exc.field)  # else an identifier: say which one
        message = exc.message if hint else str(exc)
        raise click.BadParameter(message, param_hint=hint or "IDENTIFIERS") from None
    with opened(db) as storage:
        try:
            placed = BlockService(storage, max_blocks).apply(wanted, created_by=_by())
        except BlockLimitReached as exc:
            raise click.ClickException(exc.message) from None
    click.echo(_placed(placed))
    for warning in block_warnings(wanted):
        click.echo(f"warning: {warning}", err=True)


def _placed(placed: PlacedBlock) -> str:
    """What placing a block did, for people."""
    b = placed.block
    if placed.outcome == "created":
        return f"blocked {_describe(b)}"
    if placed.outcome == "extended":
        return f"already blocked: extended {_describe(b)}"
    return f"already blocked, for at least as long: kept {_describe(b)}"


def _describe(b: Block) -> str:
    who = " ".join(pair(k, v) for k, v in (b.user or {}).items()) if b.user else str(b.ip)
    until = "until lifted" if b.expires_at is None else f"until {when(b.expires_at)}"
    if b.lifted_at:
        state = f" (lifted {when(b.lifted_at)} by {b.lifted_by})"
    elif b.expires_at is not None and b.expires_at <= datetime.now(UTC):
        state = " (expired)"
    else:
        state = ""
    reason = f" reason: {b.reason}" if b.reason else ""
    kind = "user" if b.type == "block_user" else "ip"
    # A playbook's block names the user an event named: printed with controls written out.
    return visible(f"#{b.id} {kind} {who} {until} by {b.created_by}{state}{reason}")


for_option = click.option(
    "--for", "for_", metavar="DURATION", help="How long: 30s, 15m, 1h, 7d (default: until lifted)."
)
reason_option = click.option("--reason", default="", help="Why (shown to operators).")
max_blocks_option = click.option(
    "--max-blocks",
    cls=EnvOption,
    envvar="SQREEN_MAX_BLOCKS",
    default=MAX_ACTIVE_BLOCKS,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Blocks in force at once, at most: past it a person's new block is refused, and a "
    "playbook's replaces the oldest playbook block (env: SQREEN_MAX_BLOCKS; every "
    "SDK holds them all).",
)


@click.group()
def block() -> None:
    """Block a user or an IP network: every SDK refuses their requests (403)."""


@block.command("user")
@click.argument("identifiers", nargs=-1, required=True)
@for_option
@reason_option
@max_blocks_option
@db_option
def block_user(
    identifiers: tuple[str, ...], for_: str | None, reason: str, max_blocks: int, db: str
) -> None:
    """Block the user whose identifiers include all IDENTIFIERS (uid=42 email=a@b.c)."""
    user = dict(pairs(identifiers, "IDENTIFIERS"))
    _create(db, "block_user", max_blocks, user=user, duration=for_, reason=reason)


@block.command("ip")
@click.argument("network")
@for_option
@reason_option
@max_blocks_option
@db_option
def block_ip(network: str, for_: str | None, reason: str, max_blocks: int, db: str) -> None:
    """Block an IP address or a network (CIDR, at most /16 for IPv4, /48 for IPv6; never
    loopback, which every SDK trusts as a proxy). A private network, where proxies usually
    are, is blocked with a warning."""
    _create(db, "block_ip", max_blocks, ip=network, duration=for_, reason=reason)


def _selector(target: tuple[str, ...]) -> Callable[[Block], bool]:
    """Which blocks ``unblock TARGET`` means (read before any database is opened): a user's
    are those on the same identifiers, compared as the SDKs compare them."""
    kind, rest = target[0], target[1:]
    if kind == "user" and rest:
        user = _target_user(target)
        return lambda b: b.type == "block_user" and b.user is not None and _folded(b.user) == user
    if kind == "ip" and len(rest) == 1:
        try:
            cidr = str(parse_network(rest[0]))
        except InvalidBlock as exc:
            raise click.BadParameter(exc.message, param_hint="NETWORK") from None
        return lambda b: b.type == "block_ip" and b.ip == cidr
    ids = {parse_block_id(t) for t in target}
    if None not in ids:
        return lambda b: b.id in ids
    if kind not in ("user", "ip") and any(t.lstrip("+-").isdigit() for t in target):
        bad = next(t for t in target if parse_block_id(t) is None)
        raise click.UsageError(
            f"{visible(bad[:40])} is not a block id: ids are the whole numbers from 1 that "
            "`sqreen blocks` lists"
        )
    raise click.UsageError("unblock takes block ids, 'user KEY=VALUE...' or 'ip NETWORK'")


@click.command()
@click.argument("target", nargs=-1, required=True)
@db_option
def unblock(target: tuple[str, ...], db: str) -> None:
    """Lift blocks: by id (sqreen unblock 3), by user (unblock user uid=42), by network
    (unblock ip 203.0.113.0/24)."""
    matches = _selector(target)
    with opened(db, create=False) as storage:
        blocks = BlockService(storage)
        found = [
            lifted
            for b in storage.list_blocks()
            if matches(b) and (lifted := blocks.lift(b.id, lifted_by=_by())) is not None
        ]
        remaining = _overlapping(storage, found, _target_user(target), _target_network(target))
        storage_blocks = storage.list_blocks() if not found else []
        asked = [parse_block_id(t) for t in target]
        ids = {i for i in asked if i is not None} if None not in asked else set()
        # Ids (only ids asked) that lifted nothing: a block that ended already, or none made.
        missed = sorted(ids - {b.id for b in found})
        gone = storage.blocks_by_id(missed) if missed else {}
    if not found and not missed:
        held = "".join(f"; still blocked by {_describe(b)}" for b in remaining)
        wider = _wider(storage_blocks, _target_user(target)) if not remaining else []
        held += "".join(f"; a block on more identifiers: {_describe(b)}" for b in wider)
        raise click.ClickException(f"no active block matches{held}")
    for b in found:
        click.echo(f"unblocked {_describe(b)}")
    for b in remaining:  # a block is lifted by its own target: say what still refuses
        click.echo(f"still blocked by {_describe(b)}")
    if missed:  # not silently
        said = "; ".join(
            f"not in force: {_describe(gone[i])}" if i in gone else f"no block #{i}" for i in missed
        )
        raise click.ClickException(said + ("; the others were lifted" if found else ""))


def _target_network(target: tuple[str, ...]) -> str | None:
    """The network of ``unblock ip NETWORK`` (checked by :func:`_selector`); None for another
    target."""
    return str(parse_network(target[1])) if target[0] == "ip" and len(target) == 2 else None


def _target_user(target: tuple[str, ...]) -> dict[str, str] | None:
    """The identifiers of ``unblock user KEY=VALUE...``, folded; None for another target."""
    if target[0] != "user" or len(target) < 2:
        return None
    return _folded(dict(pairs(target[1:], "IDENTIFIERS")))


def _wider(blocks: list[Block], user: dict[str, str] | None) -> list[Block]:
    """The user blocks on all of ``user``'s identifiers and more (lifted by their id: they
    refuse a user identified by more than ``unblock user`` named)."""
    if not user:
        return []
    return [
        b
        for b in blocks
        if b.type == "block_user" and b.user and user.items() < _folded(b.user).items()
    ]


def _folded(user: Mapping[str, str]) -> dict[str, str]:
    """Identifiers as the SDKs compare them (``Bob@Example.com`` is ``bob@example.com``)."""
    return {k: fold_identifier(v) for k, v in user.items()}


def _overlapping(
    storage: ControlStore,
    lifted: list[Block],
    user: dict[str, str] | None = None,
    network: str | None = None,
) -> list[Block]:
    """The active blocks that still refuse what ``lifted`` did: IP blocks whose networks
    overlap (a /32 blocked on its own inside a lifted /24 is another block, which unblocking
    the /24 leaves in force), and user blocks on some of a lifted user's identifiers (a
    block on ``email`` alone refuses the user that one on ``email`` and ``uid`` named), or
    on some of ``user``'s (folded); IP blocks overlapping ``network`` too (the address an
    ``unblock ip`` named, which a wider network's block refuses)."""
    nets = [ipaddress.ip_network(b.ip) for b in lifted if b.type == "block_ip" and b.ip]
    if network:
        nets.append(ipaddress.ip_network(network))
    users = [_folded(b.user) for b in lifted if b.type == "block_user" and b.user]
    if user:
        users.append(user)
    if not nets and not users:
        return []
    now = storage.action_set().now
    out = []
    for b in storage.list_blocks():
        if not b.is_active(now):
            continue
        if b.type == "block_ip" and b.ip:
            net = ipaddress.ip_network(b.ip)
            if any(net.version == n.version and net.overlaps(n) for n in nets):
                out.append(b)
        elif b.type == "block_user" and b.user:
            held = _folded(b.user).items()
            if any(held <= user.items() for user in users):
                out.append(b)
    return out


@click.command()
@click.option("--all", "all_", is_flag=True, help="Include the newest lifted and expired blocks.")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_ENDED_LISTED),
    default=ENDED_LISTED,
    show_default=True,
    help="With --all: how many lifted and expired blocks, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@db_option
def blocks(all_: bool, limit: int, as_json: bool, db: str) -> None:
    """List the blocks in force (the action set every SDK receives)."""
    with opened(db, create=False, upgrade=False) as storage:
        found = storage.list_blocks(ended=limit if all_ else 0)
        actions = storage.action_set()
    version, now = actions.version, actions.now
    if as_json:
        for b in found:
            click.echo(json_line(b.to_json(now)))
        return
    click.echo(f"action set version {version}: {sum(b.is_active(now) for b in found)} active")
    for b in found:
        click.echo(_describe(b))
