"""What the three test apps share: framework-free helpers behind their views.

Each test app (Flask, Django, FastAPI) exposes the same routes so that one set of scenarios
(``tests/integrations/test_scenarios.py``) runs against all of them, through their test
clients and through real servers:

``/echo/<name>``  reads the raw body, tracks ``echo`` (and ``echo.early`` before reading,
                  with ``?early=1``; the body with ``?collect=1``), answers its digest
``/form``         parses a form with the framework's own parser, tracks ``form``
``/identify``     identifies ``?uid=``, tracks ``identified`` (``?as=`` overrides the user)
``/guarded``      identifies ``?uid=`` inside ``except Exception:`` (``except BaseException:``
                  too with ``?broad=1``), tracks ``guarded``
``/count``        counts the times the view ran
``/barrier``      identifies ``?uid=``, waits for ``?n=`` requests of run ``?run=``, tracks
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from typing import Any

SECRET_MARKER = "hunter2-secret"
UNTRUSTED = os.environ.get("SQREEN_TEST_UNTRUSTED") == "1"

_lock = threading.Lock()
_thread_barriers: dict[str, threading.Barrier] = {}
_async_barriers: dict[str, asyncio.Barrier] = {}
counter = {"n": 0}


class Null:
    """Stands in for the handle in the twin apps served without sqreen."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def handle_of(found: Any) -> Any:
    """The middleware's handle, or :class:`Null` in a twin app: there ``request.sqreen`` is
    the handle without a request (Flask's attribute is on the request class every app
    shares, Django's on ``HttpRequest``), which would track what the twin must not."""
    return found if found is not None and found.bound else Null()


def digest(body: bytes, name: str) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body), "name": name}


def count() -> dict[str, int]:
    with _lock:
        counter["n"] += 1
        return {"count": counter["n"]}


def thread_barrier(run: str, parties: int) -> threading.Barrier:
    with _lock:
        barrier = _thread_barriers.get(run)
        if barrier is None:
            barrier = _thread_barriers[run] = threading.Barrier(parties, timeout=30)
        return barrier


def async_barrier(run: str, parties: int) -> asyncio.Barrier:
    with _lock:
        barrier = _async_barriers.get(run)
        if barrier is None:
            barrier = _async_barriers[run] = asyncio.Barrier(parties)
        return barrier
