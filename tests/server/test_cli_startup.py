"""``sqreen`` imports only what the command run needs: ``--version`` and ``--help`` nothing
of the collector, an admin command its storage and no web stack; and ``--help`` still lists
every command, as it did when it imported them all."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sqreen.server._cli_lazy import LazyGroup
from sqreen.server.cli import COMMANDS, main

#: What the collector's web side brings (0.2 to 0.5 s of imports at every start).
WEB = {
    "starlette",
    "jinja2",
    "httpx2",
    "httpx",
    "uvicorn",
    "sqreen.server.explorer",
    "sqreen.server.playbooks",
    "sqreen.server.app",
    "sqreen.server.intel",
}

#: Every command `sqreen --help` listed when cli.py imported them all.
NAMES = [
    "admin-password",
    "alerts",
    "backup",
    "block",
    "blocks",
    "events",
    "export",
    "import",
    "keys",
    "playbooks",
    "purge",
    "restore",
    "serve",
    "unblock",
]

# As the console script runs it, then the modules it imported, as the last line of stdout.
SCRIPT = """\
import json, sys
from sqreen.server.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def sqreen(*args: str) -> tuple[str, set[str]]:
    """What ``sqreen ARGS`` printed, and the modules it imported, in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, check=True
    )
    output, _, modules = done.stdout.rstrip("\n").rpartition("\n")
    return output, set(json.loads(modules))


def imported(modules: set[str], names: set[str]) -> set[str]:
    return {m for m in modules if m in names or m.partition(".")[0] in names}


@pytest.mark.parametrize("args", [["--version"], ["-V"], ["--help"]])
def test_version_and_help_import_nothing_of_the_collector(args: list[str]) -> None:
    output, modules = sqreen(*args)
    assert "sqreen" in output
    assert imported(modules, WEB) == set()
    assert not {m for m in modules if m.startswith("sqreen.server.storage")}


@pytest.mark.parametrize("args", [["blocks"], ["keys", "list"], ["keys", "create"], ["purge"]])
def test_admin_commands_import_no_web_stack(args: list[str], tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    created = CliRunner().invoke(main, ["keys", "create", "--name", "ci", "--db", db])
    assert created.exit_code == 0, created.output
    output, modules = sqreen(*args, "--db", db)
    if args == ["keys", "list"]:
        assert "#1  ci" in output
    assert imported(modules, WEB) == set()
    _, modules = sqreen(*args, "--help")
    assert imported(modules, WEB) == set()


def test_help_lists_every_command_with_its_own_short_help() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = result.output.partition("Commands:\n")[2].splitlines()
    assert [line.split()[0] for line in listed] == NAMES
    assert sorted(COMMANDS) == NAMES
    for name, entry in COMMANDS.items():
        command = main.load(name)
        assert command.name == name
        # The table's text is the command's own first sentence (what --help shortens).
        assert entry.short_help == command.get_short_help_str(limit=sys.maxsize)


def test_lazy_help_and_completion_are_what_the_loaded_commands_give() -> None:
    lazy = LazyGroup(
        name="sqreen", lazy=COMMANDS, package="sqreen.server", params=main.params, help=main.help
    )
    loaded = click.Group(
        name="sqreen",
        commands={name: main.load(name) for name in COMMANDS},
        params=main.params,
        help=main.help,
    )
    for width in (40, 60, 80, 120):
        assert lazy.get_help(click.Context(lazy, terminal_width=width)) == loaded.get_help(
            click.Context(loaded, terminal_width=width)
        )
    for incomplete in ("", "b", "k", "-"):
        got = lazy.shell_complete(click.Context(lazy), incomplete)
        want = loaded.shell_complete(click.Context(loaded), incomplete)
        assert [(c.value, c.help) for c in got] == [(c.value, c.help) for c in want]
    assert lazy.commands == {}  # all of that from the table: nothing imported
    assert lazy.get_command(click.Context(lazy), "blocks") is main.load("blocks")
    assert lazy.get_command(click.Context(lazy), "nope") is None


def test_an_unknown_command_is_still_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["nope"])
    assert result.exit_code == 2
    assert "No such command 'nope'" in result.output


# As the console script runs `sqreen`, with the modules named in argv[1] (comma-separated)
# made unimportable, as in an install without the [server] extra (nothing is uninstalled).
WITHOUT = """\
import sys
for name in sys.argv.pop(1).split(","):
    sys.modules[name] = None  # `import name` now raises ModuleNotFoundError
from sqreen.server._entry import main
main()
"""


@pytest.mark.parametrize(
    ("missing", "args"),
    [
        ("click", ["--help"]),  # an install with [fastapi] or [django] alone
        ("click", ["--version"]),
        ("uvicorn", ["serve", "--port", "0"]),
        ("starlette,uvicorn", ["serve", "--port", "0"]),
    ],
)
def test_without_the_server_extra_the_command_says_what_to_install(
    missing: str, args: list[str], tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT, missing, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert "pip install 'sqreen-sdk[server]'" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "the collector needs its extra" in done.stderr


def test_an_import_error_of_the_collector_itself_is_not_blamed_on_the_extra(
    tmp_path: Path,
) -> None:
    """A module of sqreen missing is a bug to see whole, not an install to fix."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT, "sqreen.server._cli_keys", "keys", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 1 and "Traceback" in done.stderr
    assert "sqreen-sdk[server]" not in done.stderr


def test_the_console_script_and_python_m_go_through_the_check() -> None:
    with open(Path(__file__).parents[2] / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts == {"sqreen": "sqreen.server._entry:main"}
    done = subprocess.run(
        [sys.executable, "-c", "import runpy, sys; sys.modules['click'] = None; "
         "sys.argv = ['sqreen', '--help']; runpy.run_module('sqreen.server', run_name='__main__')"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "pip install 'sqreen-sdk[server]'" in done.stderr
