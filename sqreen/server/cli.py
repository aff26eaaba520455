"""The ``sqreen`` command: the collector and its administration.

Every command takes ``--db`` (a SQLite file, ``./sqreen.db`` by default, or a
``postgresql://`` URL; env ``SQREEN_DB``) and works while ``sqreen serve`` runs.
"""

from __future__ import annotations

import click

from .._version import __version__
from ._cli_backup import backup, restore
from ._cli_blocks import block, blocks, unblock
from ._cli_common import db_option, opened, when
from ._cli_events import events, import_
from ._cli_export import export
from ._cli_playbooks import alerts, playbooks
from ._cli_serve import serve
from .auth import hash_token, new_token
from .explorer._cli import admin_password
from .storage import AGENT_TTL, KEY_SCOPES, KeyScope

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", message="sqreen (sqreen-sdk) %(version)s")
def main() -> None:
    """sqreen: the self-hosted collector of sqreen-sdk events."""


@main.group()
def keys() -> None:
    """API keys: SDKs and API clients send one as a bearer token."""


@keys.command("create")
@click.option("--name", default="default", show_default=True, help="What the key is for.")
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
    with opened(db, create=False) as storage:
        found = storage.list_keys()
    for k in found:
        state = f"revoked {when(k.revoked_at)}" if k.revoked_at else "active"
        click.echo(f"#{k.id}  {k.name:<24} {k.scope:<6}  created {when(k.created_at)}  {state}")


@keys.command("revoke")
@click.argument("key_id", type=int)
@db_option
def keys_revoke(key_id: int, db: str) -> None:
    """Revoke key KEY_ID (effective within seconds, also in a running collector)."""
    with opened(db, create=False) as storage:
        if not storage.revoke_key(key_id):
            raise click.ClickException(f"no active key #{key_id}")
    click.echo(f"revoked key #{key_id}")


@main.command()
@click.option("--days", default=90.0, show_default=True, type=click.FloatRange(min=0))
@db_option
def purge(days: float, db: str) -> None:
    """Delete events received more than --days ago (by their receipt, not their own time,
    which an SDK's clock sets), and SDK processes silent for a week."""
    with opened(db, create=False) as storage:
        count = storage.purge_older_than(days)
        agents = storage.purge_agents()
    click.echo(f"deleted {count} events older than {days:g} days (received before then)")
    if agents:
        click.echo(f"forgot {agents} SDK processes silent for over {AGENT_TTL.days} days")


main.add_command(serve)
main.add_command(block)
main.add_command(unblock)
main.add_command(blocks)
main.add_command(events)
main.add_command(import_)
main.add_command(export)
main.add_command(admin_password)
main.add_command(playbooks)
main.add_command(alerts)
main.add_command(backup)
main.add_command(restore)
