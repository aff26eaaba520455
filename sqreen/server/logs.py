"""The collector's own logs: a request id for each HTTP request, and ``--log-format json``.

Every request gets an id: the client's ``X-Request-ID`` when it is sane (1 to 128 of
``A-Z a-z 0-9 . _ : ; = + / @ -``: what proxies and tracers send), else a new random one.
It is echoed in the reply's ``X-Request-ID`` header and carried by every log line written
while the request is served, uvicorn's access line included (uvicorn writes it from within
the app's ``send``). An id that is too long or odd is replaced, never echoed nor logged: a
header value is the client's, and a log line or a reply header must not carry what an
attacker chose to put in them (newlines, escapes, megabytes).

With ``--log-format text`` (the default) the collector's own loggers (``sqreen``, and
``sqreen.server`` under it) write as uvicorn's do, ``INFO:     message``, at ``--log-level``:
left to uvicorn's default configuration they had no handler, and Python's last resort
printed their warnings bare and dropped every INFO line (a playbook reload said nothing).

With ``--log-format json`` every line the collector writes (its own, uvicorn's server and
access logs, any library's) is one JSON object: ``time`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, ``request_id`` where there is one, ``exception`` with the
traceback, and for access lines ``client``, ``method``, ``path``, ``status``.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "LOG_FORMATS",
    "REQUEST_ID",
    "JsonFormatter",
    "RequestIds",
    "json_log_config",
    "text_log_config",
]

LOG_FORMATS: Final = ("text", "json")
HEADER: Final = b"x-request-id"
#: The request id of the request being served (None outside a request).
REQUEST_ID: Final[ContextVar[str | None]] = ContextVar("sqreen_request_id", default=None)
_SANE: Final = re.compile(rb"[A-Za-z0-9._:;=+/@-]{1,128}")
#: What uvicorn's access log passes as its arguments, in order.
_ACCESS_FIELDS: Final = ("client", "method", "path", "http_version", "status")


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` if sane, else a new one (32 hex digits)."""
    for name, value in headers:
        if name == HEADER:
            if _SANE.fullmatch(value):
                return value.decode("ascii")
            break
    return secrets.token_hex(16)


class RequestIds:
    """An ASGI layer giving each HTTP request its id (:data:`REQUEST_ID`, the reply's
    ``X-Request-ID``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        # Not reset after the request: the server runs each request in its own task (its own
        # copy of the context), and the server's log of an error the app raised comes after
        # this returns, and should carry the id too.
        REQUEST_ID.set(rid)
        header = (HEADER, rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class JsonFormatter(logging.Formatter):
    """One JSON object a record, on one line (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            out["request_id"] = rid
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            out.update(zip(_ACCESS_FIELDS, record.args, strict=False))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        # ASCII: a message quoting a client cannot end the line for a splitter that takes
        # NEL or U+2028 for a line end, nor send escapes or a lone surrogate to a terminal.
        return json.dumps(out, default=str)


def json_log_config(level: str) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for uvicorn's ``log_config``: every logger, as
    JSON lines on stderr (one stream: lines of several workers never split each other)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    own = {"handlers": ["json"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"json": handler},
        "loggers": {
            "uvicorn": own,
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": own,
            "sqreen": own,
        },
        "root": {"handlers": ["json"], "level": "WARNING"},
    }


def text_log_config(level: str) -> dict[str, Any]:
    """uvicorn's own ``log_config``, with the ``sqreen`` loggers on its handler and at
    ``level`` (see the module's docstring)."""
    from uvicorn.config import LOGGING_CONFIG  # here: the app's module imports no uvicorn

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["sqreen"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
