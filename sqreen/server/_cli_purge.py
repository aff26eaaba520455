"""``sqreen purge``: retention, by the time events were received."""

from __future__ import annotations

import click

from ._cli_common import Days, counted, db_option, opened
from .storage import AGENT_TTL
from .times import days as days_text

__all__ = ["purge"]


@click.command()
@click.option("--days", default=90.0, show_default=True, type=Days())
@click.option(
    "--vacuum",
    is_flag=True,
    help="Then give the freed space back to the file system (SQLite: VACUUM, which holds the "
    "write lock, ingest waiting, while it rewrites the database; needs free space for a "
    "copy of what is kept).",
)
@click.option(
    "--yes",
    is_flag=True,
    help="Confirm --days 0: delete every event received until now (where serve's "
    "--retention-days 0 keeps everything).",
)
@db_option
def purge(days: float, vacuum: bool, yes: bool, db: str) -> None:
    """Delete events received more than --days ago (by their receipt, not their own time,
    which an SDK's clock sets), and SDK processes silent for a week.

    Also deletes the alerts made, the blocks ended (lifted or expired), the users' traits
    last set, and the export cursors last moved, more than --days ago: never a block in
    force, nor its alert. --days 0 deletes every event, with --yes only."""
    if days == 0 and not yes:
        raise click.UsageError(
            "--days 0 deletes every event received until now (serve's --retention-days 0 "
            "means keep everything): add --yes to do so"
        )
    with opened(db, create=False) as storage:
        count = storage.purge_older_than(days)
        agents = storage.purge_agents()
        click.echo(
            f"deleted {counted(count, 'event')} older than {days_text(days)} (received before then)"
        )
        if agents:
            click.echo(
                f"forgot {counted(agents, 'SDK process', 'SDK processes')} silent for over "
                f"{days_text(AGENT_TTL.days)}"
            )
        purged = storage.purge_records(days)
        if any(purged):
            traits = counted(purged.users, "user's traits", "users' traits")
            click.echo(
                f"deleted {counted(purged.alerts, 'alert')}, "
                f"{counted(purged.blocks, 'ended block')}, "
                f"{traits} and "
                f"{counted(purged.export_cursors, 'export cursor')} "
                f"older than {days_text(days)}"
            )
        if vacuum:
            before = storage.database_bytes()
            if storage.reclaim_space():
                after = storage.database_bytes()
                click.echo(f"vacuumed: {_mib(before)} -> {_mib(after)} on disk")
            else:
                click.echo(
                    "PostgreSQL: autovacuum makes the freed space reusable; VACUUM FULL gives "
                    "it back (it locks each table while it runs)"
                )


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"
