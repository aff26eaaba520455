"""HTTPS in front of the collector: ``sqreen serve --ssl-certfile --ssl-keyfile`` (served by
uvicorn itself, the files checked before anything starts, so that a wrong path or a key of
another certificate stops the command with a sentence rather than every worker with a
traceback), or ``--forwarded-allow-ips``, the proxies that terminate it, whose
``X-Forwarded-Proto`` and ``X-Forwarded-For`` uvicorn believes."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

from ._cli_common import EnvOption, named

__all__ = ["https_options", "https_settings"]

F = TypeVar("F", bound=Callable[..., Any])


#: (option, environment variable, help), in the order ``serve --help`` lists them.
_OPTIONS: Final = (
    (
        "--ssl-certfile",
        "SQREEN_SSL_CERTFILE",
        "Serve HTTPS with this certificate (PEM, the chain after it); SDKs then send to "
        "https://HOST:PORT",
    ),
    (
        "--ssl-keyfile",
        "SQREEN_SSL_KEYFILE",
        "Its private key (PEM, not encrypted), unless the certificate file holds it",
    ),
    (
        "--forwarded-allow-ips",
        "FORWARDED_ALLOW_IPS",
        "Proxies (addresses, CIDRs, comma-separated) whose X-Forwarded-Proto and "
        "X-Forwarded-For are believed: the address of the proxy that terminates HTTPS, never "
        "'*' (default: 127.0.0.1,::1)",
    ),
)


def https_options(f: F) -> F:
    for name, envvar, text in reversed(_OPTIONS):
        kind = click.Path(dir_okay=False) if name.startswith("--ssl") else None
        f = click.option(
            name, cls=EnvOption, envvar=envvar, type=kind, help=f"{text} (env: {envvar})"
        )(f)
    return f


def _check_proxies(value: str) -> None:
    """Refuse what uvicorn would read as no proxy at all, silently: a network with host bits
    set (``10.0.0.1/8``) or no network, which it compares as text with the peer; say the same
    of text that is no address (what it does fit: a Unix socket's name), and warn of ``*``."""
    option = "--forwarded-allow-ips"
    if value.strip() == "*":
        click.echo(
            f"{option} '*': any client can say it came over HTTPS, from any address", err=True
        )
        return
    for item in (part.strip() for part in value.split(",")):
        if item == "*":  # uvicorn trusts everyone only for '*' alone
            click.echo(f"{option}: '*' in a list matches no proxy (only '*' alone does)", err=True)
        elif "/" in item:
            try:
                ipaddress.ip_network(item)
            except ValueError as exc:
                raise click.BadParameter(
                    f"{item!r} is no network ({exc}): no proxy would be believed",
                    param_hint=f"'{option}'",
                ) from None
        elif item:
            try:
                ipaddress.ip_address(item)
            except ValueError:
                click.echo(
                    f"{option} {item!r} is no address: it matches only a peer named so (a "
                    "Unix socket's), never a proxy's address",
                    err=True,
                )


def https_settings(
    certfile: str | None, keyfile: str | None, forwarded_allow_ips: str | None
) -> dict[str, str]:
    """uvicorn's options for ``certfile`` and ``keyfile`` (none without a certificate), once
    both are readable and load together (else a ``ClickException`` naming the option), and
    for the proxies allowed to forward (uvicorn's default when not given)."""
    settings = {} if forwarded_allow_ips is None else {"forwarded_allow_ips": forwarded_allow_ips}
    if forwarded_allow_ips is not None:
        _check_proxies(forwarded_allow_ips)
    if certfile is None:
        if keyfile is not None:
            raise click.UsageError("--ssl-keyfile needs --ssl-certfile")
        return settings
    for option, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise click.ClickException(f"{named(option)} {path}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An encrypted key would make OpenSSL ask for its password on the terminal: refuse.
        context.load_cert_chain(certfile, keyfile, password=_no_password)
    except (ssl.SSLError, ValueError) as exc:
        if keyfile is None and not _holds_key(certfile):
            raise click.ClickException(
                f"--ssl-certfile {certfile} holds no private key: give the key with "
                "--ssl-keyfile (or one PEM file holding both)"
            ) from None
        raise click.ClickException(
            f"--ssl-certfile {certfile}"
            + (f" and --ssl-keyfile {keyfile}" if keyfile else "")
            + f" do not make a certificate with its key ({exc}): give PEM files, the "
            "certificate's own key, not encrypted"
        ) from None
    settings["ssl_certfile"] = certfile
    if keyfile is not None:
        settings["ssl_keyfile"] = keyfile
    return settings


def _holds_key(path: str) -> bool:
    """Whether the PEM file at ``path`` holds a private key (of any kind, encrypted too)."""
    try:
        with open(path, "rb") as file:
            return b"PRIVATE KEY-----" in file.read(1 << 20)
    except OSError:
        return False


def _no_password() -> bytes:
    raise ValueError("the key is encrypted")
