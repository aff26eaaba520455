"""The ``sqreen`` command: the collector and its administration.

Every command takes ``--db`` (a SQLite file, ``./sqreen.db`` by default, or a
``postgresql://`` URL; env ``SQREEN_DB``) and works while ``sqreen serve`` runs. Each lives
in its own module, imported only when it runs (:mod:`._cli_lazy`): ``sqreen --version``
imports click and nothing of the collector, ``sqreen blocks`` its storage and no web stack.
"""

from __future__ import annotations

from typing import Final

import click

from .._version import __version__
from ._cli_lazy import LazyCommand, LazyGroup

__all__ = ["COMMANDS", "main"]

#: name -> where the command is, and its short help (held to the command's by a test).
COMMANDS: Final = {
    "admin-password": LazyCommand(
        ".explorer._cli",
        "admin_password",
        "Set the Event Explorer's admin password (stored hashed with scrypt).",
    ),
    "alerts": LazyCommand(
        "._cli_playbooks", "alerts", "List the alerts playbooks raised, newest first."
    ),
    "backup": LazyCommand(
        "._cli_backup",
        "backup",
        "Copy the SQLite database to PATH, consistently, while the collector runs and "
        "ingests: every event stored before the backup began is in the copy (written to "
        "PATH.tmp, checked with PRAGMA integrity_check, then renamed).",
    ),
    "block": LazyCommand(
        "._cli_blocks",
        "block",
        "Block a user or an IP network: every SDK refuses their requests (403).",
    ),
    "blocks": LazyCommand(
        "._cli_blocks",
        "blocks",
        "List the blocks in force (the action set every SDK receives).",
    ),
    "events": LazyCommand(
        "._cli_events",
        "events",
        "Print the latest events stored, in the order they arrived (oldest first), "
        "filtered; --follow to tail.",
    ),
    "export": LazyCommand(
        "._cli_export",
        "export",
        "Write events (or alerts) to stdout, one JSON document a line, oldest first; by the "
        "event's own time (an alert's: when raised).",
    ),
    "import": LazyCommand(
        "._cli_events",
        "import_",
        "Load past events from a JSON-lines FILE (one event a line; idempotent).",
    ),
    "keys": LazyCommand(
        "._cli_keys", "keys", "API keys: SDKs and API clients send one as a bearer token."
    ),
    "playbooks": LazyCommand(
        "._cli_playbooks",
        "playbooks",
        "Playbooks: detections that block or alert by themselves (see `init`).",
    ),
    "purge": LazyCommand(
        "._cli_purge",
        "purge",
        "Delete events received more than --days ago (by their receipt, not their own time, "
        "which an SDK's clock sets), and SDK processes silent for a week.",
    ),
    "restore": LazyCommand(
        "._cli_backup",
        "restore",
        "Restore BACKUP (a file of `sqreen backup`) as the database --db, once it passes "
        "PRAGMA integrity_check and its schema is one this version reads.",
    ),
    "serve": LazyCommand(
        "._cli_serve",
        "serve",
        "Run the collector (SDKs send to http://HOST:PORT, or https:// with --ssl-certfile).",
    ),
    "unblock": LazyCommand(
        "._cli_blocks",
        "unblock",
        "Lift blocks: by id (sqreen unblock 3), by user (unblock user uid=42), by network "
        "(unblock ip 203.0.113.0/24).",
    ),
}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    package=__package__,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", "-V", message="sqreen (sqreen-sdk) %(version)s")
def main() -> None:
    """sqreen: the self-hosted collector of sqreen-sdk events."""
