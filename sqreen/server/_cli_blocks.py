"""``sqreen block``, ``sqreen unblock`` and ``sqreen blocks``."""

from __future__ import annotations

import getpass
import json
from datetime import timedelta

import click

from ._cli_common import db_option, opened, pairs, when
from .blocks import (
    InvalidBlock,
    parse_duration,
    validate_network,
    validate_reason,
    validate_user_spec,
)
from .storage import Block, Storage

__all__ = ["block", "blocks", "unblock"]


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _duration(value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except InvalidBlock as exc:
        raise click.BadParameter(exc.message, param_hint="--for") from None


def _describe(b: Block) -> str:
    who = " ".join(f"{k}={v}" for k, v in (b.user or {}).items()) if b.user else str(b.ip)
    until = "until lifted" if b.expires_at is None else f"until {when(b.expires_at)}"
    state = f" (lifted {when(b.lifted_at)})" if b.lifted_at else ""
    reason = f" reason: {b.reason}" if b.reason else ""
    kind = "user" if b.type == "block_user" else "ip"
    return f"#{b.id} {kind} {who} {until}{state}{reason}"


for_option = click.option(
    "--for", "for_", metavar="DURATION", help="How long: 30s, 15m, 1h, 7d (default: until lifted)."
)
reason_option = click.option("--reason", default="", help="Why (shown to operators).")


@click.group()
def block() -> None:
    """Block a user or an IP network: every SDK refuses their requests (403)."""


@block.command("user")
@click.argument("identifiers", nargs=-1, required=True)
@for_option
@reason_option
@db_option
def block_user(identifiers: tuple[str, ...], for_: str | None, reason: str, db: str) -> None:
    """Block the user whose identifiers include all IDENTIFIERS (uid=42 email=a@b.c)."""
    try:
        user = validate_user_spec(dict(pairs(identifiers, "IDENTIFIERS")))
        why = validate_reason(reason)
    except InvalidBlock as exc:
        raise click.BadParameter(str(exc), param_hint="IDENTIFIERS") from None
    duration = _duration(for_)
    with opened(db) as storage:
        b = storage.create_block(
            "block_user", user=user, duration=duration, reason=why, created_by=_by()
        )
    click.echo(f"blocked {_describe(b)}")


@block.command("ip")
@click.argument("network")
@for_option
@reason_option
@db_option
def block_ip(network: str, for_: str | None, reason: str, db: str) -> None:
    """Block an IP address or a network (CIDR, at most /16 for IPv4, /48 for IPv6)."""
    try:
        cidr = validate_network(network)
        why = validate_reason(reason)
    except InvalidBlock as exc:
        raise click.BadParameter(exc.message, param_hint="NETWORK") from None
    duration = _duration(for_)
    with opened(db) as storage:
        b = storage.create_block(
            "block_ip", ip=cidr, duration=duration, reason=why, created_by=_by()
        )
    click.echo(f"blocked {_describe(b)}")


def _matching(storage: Storage, target: tuple[str, ...]) -> list[Block]:
    kind, rest = target[0], target[1:]
    active = storage.list_blocks()
    if kind == "user" and rest:
        user = dict(pairs(rest, "IDENTIFIERS"))
        return [b for b in active if b.type == "block_user" and b.user == user]
    if kind == "ip" and len(rest) == 1:
        try:
            cidr = validate_network(rest[0])
        except InvalidBlock as exc:
            raise click.BadParameter(exc.message, param_hint="NETWORK") from None
        return [b for b in active if b.type == "block_ip" and b.ip == cidr]
    if all(t.isdigit() for t in target):
        wanted = {int(t) for t in target}
        return [b for b in active if b.id in wanted]
    raise click.UsageError("unblock takes block ids, 'user KEY=VALUE...' or 'ip NETWORK'")


@click.command()
@click.argument("target", nargs=-1, required=True)
@db_option
def unblock(target: tuple[str, ...], db: str) -> None:
    """Lift blocks: by id (sqreen unblock 3), by user (unblock user uid=42), by network
    (unblock ip 203.0.113.0/24)."""
    with opened(db) as storage:
        found = [
            lifted
            for b in _matching(storage, target)
            if (lifted := storage.lift_block(b.id, _by())) is not None
        ]
    if not found:
        raise click.ClickException("no active block matches")
    for b in found:
        click.echo(f"unblocked {_describe(b)}")


@click.command()
@click.option("--all", "all_", is_flag=True, help="Include lifted and expired blocks.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@db_option
def blocks(all_: bool, as_json: bool, db: str) -> None:
    """List the blocks in force (the action set every SDK receives)."""
    with opened(db) as storage:
        found = storage.list_blocks(include_inactive=all_)
        actions = storage.action_set()
    version, now = actions.version, actions.now
    if as_json:
        for b in found:
            click.echo(json.dumps(b.to_json(now)))
        return
    click.echo(f"action set version {version}: {sum(b.is_active(now) for b in found)} active")
    for b in found:
        click.echo(_describe(b))
