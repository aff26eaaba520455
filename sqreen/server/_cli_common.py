"""What every ``sqreen`` command shares: the ``--db`` option, opening storage, parsing, and
printing what SDKs sent (which an attacker holding an ingest key writes) to a terminal."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from . import blocks
from .blocks import InvalidBlock, parse_pairs
from .storage import POSTGRES_SCHEMES, Storage, open_storage
from .times import when  # one way to show a time to people: the pages' and ours

__all__ = [
    "MAX_DAYS",
    "Days",
    "Finite",
    "counted",
    "db_option",
    "json_line",
    "opened",
    "pairs",
    "parse_when",
    "time_range",
    "when",
    "when_options",
    "with_db",
]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DB = "sqreen.db"


def with_db(command: str, db: str) -> str:
    """``command`` (a ``sqreen`` command a message tells to run) as it reaches ``db``: with
    its ``--db`` unless that is the default or ``SQREEN_DB``'s (which the command reads
    too). A database URL is not written out (it may hold a password)."""
    if db == DEFAULT_DB or os.environ.get("SQREEN_DB") == db:
        return f"`{command}`"
    if "://" in db:
        return f"`{command}` with the same --db"
    return f"`{command} --db {shlex.quote(db)}`"


#: Retention in days, at most (100 years): a date that many days ago can be counted back to
#: from any date the collector keeps (``timedelta`` holds at most 999 999 999 days, a
#: ``datetime`` goes back to year 1), and a larger value is a mistake, not a wish.
MAX_DAYS = 36_500


class Finite(click.FloatRange):
    """A number from ``low`` to ``high`` (``inf`` and ``nan`` refused: ``nan`` passes every
    comparison of a range)."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__(low, high)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:  # click's own words: "'abc' is not a valid float range"
                self.fail(f"{value!r} is not a number", param, ctx)
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not in the range {self.min}<=x<={self.max}.", param, ctx)
        return number


class Days(Finite):
    """A number of days from 0 to :data:`MAX_DAYS`, as ``--days`` and ``--retention-days``
    take."""

    def __init__(self) -> None:
        super().__init__(0, MAX_DAYS)


#: A URL's scheme (``postgresql+psycopg://``), and what follows it.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(//)?(.*)", re.DOTALL)
#: libpq's ``key=value`` connection strings (``host=... dbname=...``).
_CONNINFO = re.compile(r"\s*(host|hostaddr|port|dbname|user|password|service|sslmode)\s*=")


def checked_db(value: str) -> str:
    """``--db`` as the storage opens it: a ``postgresql://`` URL (``postgres://`` and any
    case of the scheme too, given as ``postgresql://``) or a SQLite file's path
    (``sqlite:///path``). What looks like another form of PostgreSQL's address (a
    ``key=value`` string, ``postgresql:db``, ``postgresql+psycopg://``) or another scheme
    is refused, :class:`click.BadParameter` saying what to write: it would otherwise be
    opened as a new SQLite file named after it, password included, and a collector would
    count alone. The value is never repeated (it may hold a password)."""
    if not value.strip():
        raise click.BadParameter("empty: a SQLite file's path, or a postgresql:// URL")
    if _CONNINFO.match(value):
        raise click.BadParameter(
            "a key=value connection string: write it as a URL, "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
        )
    found = _SCHEME.fullmatch(value.strip())
    if found is None or len(found[1]) == 1:  # no scheme (C:\\ is a drive)
        return value
    scheme, slashes, rest = found[1].lower(), found[2] or "", found[3]
    postgres = scheme.startswith(("postgresql", "postgres"))
    if not postgres and not slashes:
        return value  # a path with a colon ("backup:old.db")
    if value != value.strip():
        raise click.BadParameter("spaces around it: give it without them")
    if scheme in ("postgresql", "postgres") and slashes:
        return f"postgresql://{rest}"
    if postgres:
        raise click.BadParameter(
            f"{scheme}:{slashes}...: write the URL as postgresql://USER:PASSWORD@HOST"
            ":PORT/DBNAME (this collector reads PostgreSQL with psycopg itself)"
        )
    if scheme == "sqlite":
        return value
    raise click.BadParameter(
        f"{scheme}://... is no database this collector opens: "
        "a SQLite file's path, or a postgresql:// URL"
    )


class EnvOption(click.Option):
    """An option that the environment may set: a bad value read there names its variable
    (click named the option alone, which the command line did not give)."""

    def get_error_hint(self, ctx: click.Context | None) -> str:
        hint = super().get_error_hint(ctx)
        return f"{hint} ({self.envvar} in the environment)" if self.from_env(ctx) else hint

    def from_env(self, ctx: click.Context | None) -> bool:
        """Whether the environment gave this option's value."""
        return (
            ctx is not None
            and self.name is not None
            and isinstance(self.envvar, str)
            and ctx.get_parameter_source(self.name) is click.core.ParameterSource.ENVIRONMENT
        )


def named(option: str) -> str:
    """``option`` as an error found after parsing names it: with the variable that gave its
    value when the environment did (``--ssl-certfile (SQREEN_SSL_CERTFILE in the
    environment)``)."""
    ctx = click.get_current_context(silent=True)
    for param in ctx.command.params if ctx is not None else ():
        if isinstance(param, EnvOption) and option in param.opts and param.from_env(ctx):
            return f"{option} ({param.envvar} in the environment)"
    return option


def db_option(f: F) -> F:
    return click.option(
        "--db",
        cls=EnvOption,
        envvar="SQREEN_DB",
        default=DEFAULT_DB,
        show_default=True,
        callback=lambda ctx, param, value: checked_db(value),
        help="A SQLite file, or a postgresql:// URL (env: SQREEN_DB).",
    )(f)


def when_options(f: F) -> F:
    """``--since`` and ``--until``, as ``sqreen events`` and ``sqreen export`` take them."""
    f = click.option("--until", metavar="WHEN", help="Same forms as --since.")(f)
    return click.option("--since", metavar="WHEN", help="30m, 2h, 7d ago, or an ISO 8601 time.")(f)


def time_range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """The times ``--since`` and ``--until`` name (None where not given); a range ending
    where it begins, or before, is refused (it holds nothing: an empty answer would say
    that nothing happened)."""
    now = datetime.now(UTC)  # one now: --since 2h --until 2h is empty
    # Given empty (an unset shell variable: --since "$FROM"), not taken for no bound: the
    # whole history would be read as what was asked.
    start = parse_when(since, "--since", now) if since is not None else None
    end = parse_when(until, "--until", now) if until is not None else None
    if start is not None and end is not None and end <= start:
        raise click.BadParameter(
            f"must be later than --since (--since {since} is {when(start)}, "
            f"--until {until} is {when(end)})",
            param_hint="--until",
        )
    return start, end


def existing(db: str) -> None:
    """Refuse a SQLite ``db`` that is no file, saying where it was looked for."""
    if db.startswith(POSTGRES_SCHEMES):
        return
    path = Path(db.removeprefix("sqlite://"))
    if not path.is_file():
        what = "a directory, not a file" if path.is_dir() else "no such file"
        raise click.ClickException(
            f"cannot open the SQLite database {str(path.resolve())!r}: {what} "
            "(give --db, or set SQREEN_DB)"
        )


@contextmanager
def opened(db: str, *, create: bool = True, upgrade: bool = True) -> Iterator[Storage]:
    """The storage at ``db``; a command that creates nothing (``create=False``) never
    creates one, and says where it looked; a read-only one (``upgrade=False``) migrates
    nothing: it refuses an older schema, saying how to upgrade it."""
    if not create:
        existing(db)
    try:
        storage = open_storage(db, create=create, upgrade=upgrade)
    except (RuntimeError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield storage
    finally:
        storage.close()


def pairs(values: Iterable[str], option: str) -> tuple[tuple[str, str], ...]:
    try:
        return tuple(parse_pairs(values, option).items())
    except InvalidBlock as exc:
        raise click.BadParameter(exc.message, param_hint=option) from None


def nonempty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: an option given as ``''`` (or blanks) is a mistake, not a filter
    that matches nothing."""
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty", ctx=ctx, param=param)
    return value


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``1 alert``, ``2 alerts``: a count with its noun agreeing."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def json_line(value: Any) -> str:
    """``value`` as one line of ASCII JSON: every control character escaped (JSON leaves DEL
    as it is), so that printing it can never act on the terminal; the data stays exact."""
    return json.dumps(value).replace("\x7f", "\\u007f")


def parse_when(value: str, option: str, now: datetime | None = None) -> datetime:
    """``1h`` (that long before ``now``, by default now) or an ISO 8601 time (naive is
    UTC)."""
    try:
        return blocks.parse_when(value, now or datetime.now(UTC), option)
    except InvalidBlock as exc:
        raise click.BadParameter(exc.message, param_hint=option) from None
