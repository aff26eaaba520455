"""The ``sqreen`` console script: the command, or what to install when it cannot run.

The collector's dependencies come with the ``[server]`` extra. An install without it (only
``[fastapi]``, say) still gets the ``sqreen`` script, and used to answer ``sqreen --help``
with a traceback ending in ``ModuleNotFoundError: No module named 'click'`` (or, with click
there, ``sqreen serve`` with one for uvicorn). This module imports nothing but the standard
library before the command, so that it can say what the framework integrations say: the
extra to install. A missing module of sqreen itself is a bug, and is left to show whole.
"""

from __future__ import annotations

import sys
from typing import Final

__all__ = ["SERVER_MODULES", "main"]

#: The top-level modules of the ``[server]`` extra's packages (pyproject.toml).
SERVER_MODULES: Final = frozenset(
    {
        "click",
        "starlette",
        "uvicorn",
        "jinja2",
        "itsdangerous",
        "psycopg",
        "iptocc",
        "iporigin",
        "maxminddb",
        "opentelemetry",
        "prometheus_client",
        "msgspec",
    }
)
EXTRA: Final = "pip install 'sqreen-sdk[server]'"


def main() -> None:
    try:
        from .cli import main as command

        command()
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in SERVER_MODULES:
            raise
        print(
            f"sqreen: the collector needs its extra: {EXTRA} (missing: {missing})", file=sys.stderr
        )
        raise SystemExit(1) from None
