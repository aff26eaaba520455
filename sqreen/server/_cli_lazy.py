"""A click group that imports a command's module only when that command is asked for.

click's documented pattern (Lazily Loading Subcommands): ``list_commands`` names every
command from a table, ``get_command`` imports the one named. Each command's short help is in
the table too, so that ``sqreen --help`` and shell completion list every command without
importing any (tests/server/test_cli_startup.py holds the table to the commands' own help).
Without this, ``sqreen --version`` imported the whole collector: 0.47 s of imports (the
explorer's Jinja2 and Starlette, the playbooks, IP intelligence) for one line of output.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import click
from click.shell_completion import CompletionItem

__all__ = ["LazyCommand", "LazyGroup"]


class LazyCommand(NamedTuple):
    module: str  # absolute, or relative to the group's ``package``
    attribute: str
    short_help: str  # the command's own first sentence, as ``--help`` lists it


class LazyGroup(click.Group):
    def __init__(
        self, *args: Any, lazy: Mapping[str, LazyCommand], package: str, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)
        self.package = package

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self.add_command(self.load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def load(self, name: str) -> click.Command:
        entry = self.lazy[name]
        found = getattr(importlib.import_module(entry.module, self.package), entry.attribute)
        if not isinstance(found, click.Command):
            raise TypeError(f"{entry.module}.{entry.attribute} is not a click command")
        return found

    def listed(self, ctx: click.Context) -> dict[str, click.Command]:
        """Every command: those loaded, and a stand-in holding the short help of the others
        (click shortens it to the screen's width as it would the command's own help)."""
        return {
            name: self.commands.get(name) or click.Command(name, help=self.lazy[name].short_help)
            for name in self.list_commands(ctx)
        }

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        click.Group(commands=self.listed(ctx)).format_commands(ctx, formatter)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        results = [
            CompletionItem(name, help=command.get_short_help_str())
            for name, command in self.listed(ctx).items()
            if name.startswith(incomplete) and not command.hidden
        ]
        results.extend(click.Command.shell_complete(self, ctx, incomplete))
        return results
