"""``sqreen admin-password``, and what ``sqreen serve`` says about the explorer at start."""

from __future__ import annotations

import getpass
import sys
import warnings
from collections.abc import Callable
from functools import partial

import click

from .._cli_common import DEFAULT_DB, db_option, opened, with_db
from ..storage import Storage
from . import cookie_options, proxy_options
from ._secrets import PASSWORD_SETTING, apply_env_password, set_admin_password

__all__ = ["admin_password", "explorer_startup"]


@click.command("admin-password")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
@db_option
def admin_password(password_stdin: bool, db: str) -> None:
    """Set the Event Explorer's admin password (stored hashed with scrypt).

    Every session opened with the previous password ends. The environment variable
    SQREEN_ADMIN_PASSWORD, when `sqreen serve` starts, does the same.
    """
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        with warnings.catch_warnings():  # (no terminal: getpass reads stdin, and says so)
            warnings.simplefilter("ignore", getpass.GetPassWarning)
            try:
                password = click.prompt("Admin password", hide_input=True, confirmation_prompt=True)
            except click.Abort:
                if sys.stdin.isatty():
                    raise  # Ctrl-C or Ctrl-D at the prompt
                # the end of a script's input, no terminal: click said only "Aborted!"
                raise click.UsageError(
                    "no password read (no terminal, and the input ended): pipe it with "
                    "--password-stdin: printf '%s\\n' \"$PASSWORD\" | sqreen "
                    "admin-password --password-stdin"
                ) from None
    with opened(db) as storage:
        try:
            set_admin_password(storage, password)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo("admin password set: log in to the Event Explorer at /explorer/", err=True)


_ECHO: Callable[[str], object] = partial(click.echo, err=True)


def explorer_startup(
    storage: Storage,
    url: str,
    say: Callable[[str], object] = _ECHO,
    note: Callable[[str], object] | None = None,
    db: str = DEFAULT_DB,
) -> None:
    """Apply ``SQREEN_ADMIN_PASSWORD``, ``say`` how to unlock the explorer when it cannot be
    used yet, else ``note`` where it is (on stderr, or log lines with ``--log-format json``:
    a warning, then information)."""
    try:
        cookie_options()
        proxy_options()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        changed = apply_env_password(storage)
    except ValueError as exc:
        raise click.ClickException(f"SQREEN_ADMIN_PASSWORD: {exc}") from None
    if changed:
        say("admin password set from SQREEN_ADMIN_PASSWORD")
    if storage.get_setting(PASSWORD_SETTING) is None:
        command = with_db("sqreen admin-password", db)
        say(f"no admin password yet: set one with {command} to use the Event Explorer")
    else:
        (note or say)(f"Event Explorer: {url}/explorer/")
