"""``sqreen keys``: API keys, which SDKs and API clients send as bearer tokens."""

from __future__ import annotations

import click

from .._text import first_hidden
from ._cli_common import db_option, opened, when
from .storage import KEY_SCOPES, KeyScope
from .tokens import hash_token, new_token

__all__ = ["keys"]


@click.group()
def keys() -> None:
    """API keys: SDKs and API clients send one as a bearer token."""


#: A key's name at most, in characters: it is listed and shown on the explorer's agents.
MAX_KEY_NAME = 100


def _key_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A name people read in one line: some text, no control or invisible character."""
    name = value.strip()
    if not name:
        raise click.BadParameter("must not be empty", ctx, param)
    if len(name) > MAX_KEY_NAME:
        raise click.BadParameter(f"at most {MAX_KEY_NAME} characters, not {len(name)}", ctx, param)
    hidden = first_hidden(name)
    if hidden is not None:
        raise click.BadParameter(f"must not hold {hidden!r}", ctx, param)
    return name


@keys.command("create")
@click.option(
    "--name",
    default="default",
    show_default=True,
    callback=_key_name,
    help=f"What the key is for (at most {MAX_KEY_NAME} characters).",
)
@click.option(
    "--scope",
    type=click.Choice(KEY_SCOPES),
    default="ingest",
    show_default=True,
    help="ingest: what an SDK needs (events, heartbeats, the action set); "
    "admin: the blocks API (/v1/blocks) too.",
)
@db_option
def keys_create(name: str, scope: KeyScope, db: str) -> None:
    """Create a key and print its token (shown only this once)."""
    token = new_token()
    with opened(db) as storage:
        key = storage.create_key(name, hash_token(token), scope)
    click.echo(f"created {scope} key #{key.id} ({name}); its token, shown only now:", err=True)
    click.echo(token)


@keys.command("list")
@db_option
def keys_list(db: str) -> None:
    """List keys (tokens are not stored, only their hashes)."""
    with opened(db, create=False, upgrade=False) as storage:
        found = storage.list_keys()
    for k in found:
        state = f"revoked {when(k.revoked_at)}" if k.revoked_at else "active"
        click.echo(f"#{k.id}  {k.name:<24} {k.scope:<6}  created {when(k.created_at)}  {state}")


@keys.command("revoke")
@click.argument("key_id", type=click.IntRange(1, 2**63 - 1))  # (a database integer)
@db_option
def keys_revoke(key_id: int, db: str) -> None:
    """Revoke key KEY_ID (effective within seconds, also in a running collector)."""
    with opened(db, create=False) as storage:
        if not storage.revoke_key(key_id):
            raise click.ClickException(f"no active key #{key_id}")
    click.echo(f"revoked key #{key_id}")
