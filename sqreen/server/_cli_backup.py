"""``sqreen backup`` and ``sqreen restore``: a SQLite database copied while the collector
runs, and put back (:mod:`.storage.backup`). PostgreSQL has its own tools: both commands say
so and exit with status 2."""

from __future__ import annotations

import time
from collections.abc import Callable

import click

from ._cli_common import db_option, existing
from .storage import POSTGRES_SCHEMES
from .storage.backup import STEP_PAGES, BackupError, Copied, backup_sqlite, restore_sqlite

__all__ = ["backup", "restore"]

#: Seconds between two progress lines on stderr.
PROGRESS_EVERY = 2.0

_PG_DUMP = (
    "sqreen {command} is for SQLite; PostgreSQL has its own tools, which copy a live "
    'database consistently: pg_dump --format=custom --file=sqreen.dump "$SQREEN_DB", and '
    'pg_restore --clean --if-exists --no-owner --dbname="$SQREEN_DB" sqreen.dump (README, '
    '"Backups")'
)

force_option = click.option("--force", is_flag=True, help="Replace the file if it exists.")
step_option = click.option(
    "--step-pages",
    default=STEP_PAGES,
    show_default=True,
    type=click.IntRange(1, 2**31 - 1),  # (SQLite's backup step takes a C int)
    help="Pages copied a step, between progress reports.",
)


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@force_option
@step_option
@db_option
def backup(path: str, force: bool, step_pages: int, db: str) -> None:
    """Copy the SQLite database to PATH, consistently, while the collector runs and ingests:
    every event stored before the backup began is in the copy (written to PATH.tmp, checked
    with PRAGMA integrity_check, then renamed)."""
    existing(db)  # as every command reading the database says it
    started = time.monotonic()
    copied = _copy(
        "backup", db, backup_sqlite, db.removeprefix("sqlite://"), path, force, step_pages
    )
    click.echo(f"backed up {_described(copied)} to {path} in {time.monotonic() - started:.1f} s")


@click.command()
@click.argument("backup_path", metavar="BACKUP", type=click.Path(dir_okay=False))
@force_option
@step_option
@db_option
def restore(backup_path: str, force: bool, step_pages: int, db: str) -> None:
    """Restore BACKUP (a file of `sqreen backup`) as the database --db, once it passes PRAGMA
    integrity_check and its schema is one this version reads. An existing database is
    replaced only with --force: stop the collector first."""
    target = db.removeprefix("sqlite://")
    copied = _copy("restore", db, restore_sqlite, backup_path, target, force, step_pages)
    click.echo(f"restored {_described(copied)} from {backup_path} to {db}")


def _copy(
    command: str,
    db: str,
    copy: Callable[..., Copied],
    source: str,
    target: str,
    force: bool,
    step_pages: int,
) -> Copied:
    """``copy(source, target)`` with progress on stderr; a PostgreSQL ``db`` is pointed to
    its own tools (status 2), a ``BackupError`` is the command's error."""
    if db.startswith(POSTGRES_SCHEMES):
        click.echo(_PG_DUMP.format(command=command), err=True)
        raise SystemExit(2)
    try:
        return copy(source, target, force=force, step_pages=step_pages, progress=_reporter())
    except (BackupError, OSError) as exc:  # OSError: the rename or a sync refused
        raise click.ClickException(str(exc)) from None


def _reporter() -> Callable[[int, int], None]:
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY and done < total:
            last[0] = now
            click.echo(f"copied {done} of {total} pages", err=True)

    return report


def _described(copied: Copied) -> str:
    return (
        f"{copied.pages} pages ({copied.size / 2**20:.1f} MiB, schema version "
        f"{copied.schema_version})"
    )
