"""``sqreen serve``: the collector's processes, and what each is given at start.

A bad playbook file, ``--geoip-db``, ``--export`` or TLS file stops the command before
anything listens, with the option and the reason; ``--workers N`` processes each build their
app from the options passed in the environment (:mod:`._serve_worker`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import logging.config
import os
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Final

import click

from ._cli_blocks import max_blocks_option
from ._cli_common import Days, EnvOption, Finite, db_option, opened, with_db
from ._cli_export import destination, export_options, forwarder
from ._cli_https import https_options, https_settings
from ._listen import check_listen, url_host
from ._serve_worker import (
    WORKER_ENV,
    enrichment,
    open_ip_intel,
    playbook_source,
    settle_gc,
    worker_app,
)
from ._signals import exit_zero_after_sigterm, reload_on_sighup
from .actions import MAX_POLLS_PER_KEY
from .connections import PROTOCOL, ConnectionLimits, fit_to_open_files
from .explorer._cli import explorer_startup
from .intel import DEFAULT_MAX_SPEED, MIN_MAX_SPEED
from .logs import LOG_FORMATS, json_log_config, text_log_config
from .playbooks import NONE_IN_FORCE, PlaybookSource, never_firing
from .storage import serving

__all__ = ["GRACEFUL_SHUTDOWN", "serve"]

#: --travel-speed at most (km/h): a hundred times a rifle bullet; more is a typing mistake.
MAX_TRAVEL_SPEED = 1_000_000


class TravelSpeed(Finite):
    """``--travel-speed``: 0 (off), or from :data:`~.intel.MIN_MAX_SPEED` (a slow walk) to
    :data:`MAX_TRAVEL_SPEED` km/h."""

    def __init__(self) -> None:
        super().__init__(0, MAX_TRAVEL_SPEED)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if 0 < number < MIN_MAX_SPEED:
            self.fail(
                f"{value} km/h is below a slow walk: 0 (off), or from {MIN_MAX_SPEED:g} to "
                f"{MAX_TRAVEL_SPEED}",
                param,
                ctx,
            )
        return number


@click.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--retention-days",
    default=90.0,
    show_default=True,
    type=Days(),
    help="Delete events received more than this many days ago (hourly; by their receipt, "
    "not their own time); 0 keeps everything.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes serving the API (SQLite serialises their writes; PostgreSQL runs them "
    "in parallel).",
)
@click.option(
    "--playbooks",
    "playbooks_file",
    cls=EnvOption,
    envvar="SQREEN_PLAYBOOKS",
    type=click.Path(dir_okay=False),
    help="A playbook file (TOML; see `sqreen playbooks init`), re-read when it changes and "
    "on SIGHUP (env: SQREEN_PLAYBOOKS).",
)
@click.option(
    "--max-connections",
    default=ConnectionLimits.max_connections,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Open connections per process, at most (lowered to fit the open-file limit); past "
    "it, the connection idle longest is closed.",
)
@click.option(
    "--timeout-keep-alive",
    default=5,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="Seconds an idle keep-alive connection is kept.",
)
@click.option(
    "--header-timeout",
    default=ConnectionLimits.header_timeout,
    show_default=True,
    type=Finite(0.1, 3600),
    help="Seconds a connection has to send a request's headers (after connecting, or "
    "after its previous response).",
)
@click.option(
    "--body-timeout",
    default=ConnectionLimits.body_timeout,
    show_default=True,
    type=Finite(0.1, 3600),
    help="Seconds a request has to send its body, after its headers.",
)
@click.option(
    "--max-polls-per-key",
    default=MAX_POLLS_PER_KEY,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Action long-polls one API key may hold at once per process; more are answered at "
    "once (their SDKs ask again 30 s later).",
)
@max_blocks_option
@click.option(
    "--geoip-db",
    "geoip_dbs",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A MaxMind-format .mmdb file (GeoLite2 City or ASN, DB-IP Lite, IPinfo Lite): city, "
    "coordinates and ASN for each event's address. Repeat for several; for each field, the "
    "first file that has it wins.",
)
@click.option(
    "--ip-intel/--no-ip-intel",
    default=True,
    show_default=True,
    help="Enrich each event's address at ingest (country, network kind, threat score; city, "
    "coordinates and ASN with --geoip-db). Off: events are stored without ip_info, and "
    "impossible travel is off with it.",
)
@click.option(
    "--travel-speed",
    type=TravelSpeed(),
    default=DEFAULT_MAX_SPEED,
    show_default=True,
    help="Impossible travel: two successful logins of a user whose places (from --geoip-db) "
    "are further apart than this speed in km/h allows add a security.impossible_travel event. "
    "0 turns it off.",
)
@export_options
@click.option(
    "--metrics-token",
    cls=EnvOption,
    envvar="SQREEN_METRICS_TOKEN",
    help="A bearer token for GET /metrics alone, for Prometheus (an admin key works too; "
    "env: SQREEN_METRICS_TOKEN).",
)
@https_options
@click.option("--access-log/--no-access-log", default=True, show_default=True)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option(
    "--log-format",
    cls=EnvOption,
    envvar="SQREEN_LOG_FORMAT",
    default="text",
    show_default=True,
    type=click.Choice(LOG_FORMATS),
    help="json: every log line one JSON object, with the request id (env: SQREEN_LOG_FORMAT).",
)
def serve(
    db: str,
    host: str,
    port: int,
    retention_days: float,
    workers: int,
    playbooks_file: str | None,
    max_connections: int,
    timeout_keep_alive: int,
    header_timeout: float,
    body_timeout: float,
    max_polls_per_key: int,
    max_blocks: int,
    geoip_dbs: tuple[str, ...],
    ip_intel: bool,
    travel_speed: float,
    export_url: str | None,
    export_format: str,
    metrics_token: str | None,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    forwarded_allow_ips: str | None,
    access_log: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Run the collector (SDKs send to http://HOST:PORT, or https:// with --ssl-certfile)."""
    import uvicorn

    say: Callable[[str], object] = partial(click.echo, err=True)
    note = say  # what is only information (where the explorer is)
    log_config = text_log_config(log_level)  # the collector's loggers too, at --log-level
    if log_format == "json":  # what serve says at start is logged too, as JSON
        log_config = json_log_config(log_level)
        logging.config.dictConfig(log_config)
        say = logging.getLogger("sqreen.server").warning
        note = logging.getLogger("sqreen.server").info
    source = playbook_source(playbooks_file)  # a bad file stops here, with its line
    https = https_settings(ssl_certfile, ssl_keyfile, forwarded_allow_ips)  # and bad TLS files
    tls = "ssl_certfile" in https
    fitted = fit_to_open_files(max_connections)
    if fitted < max_connections:
        say(
            f"--max-connections lowered to {fitted}: the open-file limit (ulimit -n) leaves "
            "no room for more"
        )
    ConnectionLimits(fitted, header_timeout, body_timeout).export()  # for every process
    limits = {"max_blocks": max_blocks, "max_polls_per_key": max_polls_per_key}
    if not ip_intel and geoip_dbs:
        raise click.UsageError("--geoip-db is read by IP intelligence: drop --no-ip-intel")
    given = click.get_current_context().get_parameter_source("travel_speed")
    if not ip_intel and travel_speed > 0 and given is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError(
            "--travel-speed: impossible travel places logins with IP intelligence, which "
            "--no-ip-intel turns off: drop one of them"
        )
    opened_intel = open_ip_intel(geoip_dbs)  # and so does a bad --geoip-db, before anything starts
    gives = opened_intel.gives()
    opened_intel.close()
    target = destination(export_url, export_format)  # and a bad --export
    port = check_listen(host, port)  # and a taken port, before anything says it started
    # `serving`, until the collector stops: `sqreen restore --force` refuses a served database.
    with opened(db) as storage, serving(db.removeprefix("sqlite://")):
        # A restored database counts on from its backup's version, which SDKs may hold with
        # other blocks: past every version given before, they each read the whole set once.
        storage.renumber_actions()
        if not any(k.revoked_at is None for k in storage.list_keys()):
            say(f"no API key yet: create one with {with_db('sqreen keys create', db)}")
        if not tls and not _is_loopback(host):
            say(
                f"listening on {host}: serve HTTPS (--ssl-certfile, or a reverse proxy in "
                "front of the collector)"
            )
        url = f"{'https' if tls else 'http'}://{url_host(host)}:{port}"
        explorer_startup(storage, url, say, note, db=db)
        if target is not None:  # (named without its credentials and query)
            note(f"exporting events and alerts to {target.name} ({target.format})")
        if source is not None:
            (note if source.playbooks.playbooks else say)(_playbooks_loaded(source))
            source.unreachable = lambda found: never_firing(
                found.playbooks,
                ip_intel=ip_intel,
                geoip=bool(geoip_dbs),
                travel=travel_speed > 0,
                gives=gives,
            )
            for line in source.unreachable(source.playbooks):
                say(line)
        elif watched := storage.recorded_watched():
            say(
                "no --playbooks here, but a collector of this database runs playbooks (they "
                f"watch {', '.join(watched[:5])}): the events this one stores count in no "
                "window. Give every collector of a database the same --playbooks"
            )
        logging.getLogger("sqreen").setLevel(log_level.upper())
        options: dict[str, Any] = {
            "host": host,
            "port": port,
            "log_level": log_level,
            "access_log": access_log,
            "server_header": False,
            # Action long-polls are answered as the stop signal arrives (_signals.py); what
            # else is still running after a few seconds is cut rather than waited for.
            "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN,
            # Connections bounded in number and time (sqreen/server/connections.py); no
            # websocket upgrade, which would take a connection out of the guard.
            "http": PROTOCOL,
            "ws": "none",
            # The guard logs an accept out of descriptors through asyncio's exception
            # handler; uvloop (picked by uvicorn when installed) reports those its own way.
            "loop": "asyncio",
            "timeout_keep_alive": timeout_keep_alive,
            **https,
        }
        options["log_config"] = log_config
        if workers == 1:
            # One process: prometheus_client counts in memory (it is imported here, with app).
            from .app import create_app

            app = create_app(
                storage,
                retention_days=retention_days or None,
                playbooks=source,
                max_blocks=max_blocks,
                max_polls_per_key=max_polls_per_key,
                **enrichment(ip_intel, open_ip_intel(geoip_dbs, storage), travel_speed),
                forwarder=forwarder(storage, target),
                metrics_token=metrics_token,
            )
            reload_on_sighup(source)
            exit_zero_after_sigterm()
            settle_gc()
            uvicorn.run(app, **options)
            return
    # Several processes: each opens its own storage (see worker_app). The playbooks in force
    # are copied for a worker that starts while the file does not hold (_supervisor.py).
    kept = tempfile.TemporaryDirectory(prefix="sqreen-playbooks-") if source else None
    in_force = Path(kept.name) / "in-force.toml" if kept else None
    os.environ[WORKER_ENV] = json.dumps(
        {
            "db": db,
            "retention_days": retention_days or None,
            "workers": workers,
            "playbooks": playbooks_file,
            **limits,
            "geoip": list(geoip_dbs),
            "ip_intel": ip_intel,
            "travel_speed": travel_speed,
            "export": [export_url, export_format] if export_url else None,
            "metrics_token": metrics_token,
            "supervisor": os.getpid(),
            "in_force": str(in_force) if in_force else None,
        }
    )
    # Several processes: their counters in files of one directory, summed at each scrape.
    from ._supervisor import supervise
    from .metrics import multiprocess_dir

    with (
        multiprocess_dir(),
        serving(db.removeprefix("sqlite://")),
        kept or contextlib.nullcontext(),
    ):
        supervise(f"{worker_app.__module__}:worker_app", workers, source, in_force, **options)


GRACEFUL_SHUTDOWN: Final = 3


def _playbooks_loaded(source: PlaybookSource) -> str:
    """What ``serve`` says of its playbooks at start (a reload says it in the log)."""
    found = source.playbooks.playbooks
    blocking = sum(p.blocks for p in found)
    watched = ", ".join(sorted(source.playbooks.watched())) or "nothing"
    if not found:
        return f"0 playbooks loaded from {source.path}: {NONE_IN_FORCE}"
    return (
        f"{len(found)} playbook{'' if len(found) == 1 else 's'} loaded from {source.path} "
        f"({blocking} blocking; SDKs send at once: {watched})"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
