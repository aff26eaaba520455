"""Django's own ``tests/runtests.py`` with sqreen's middleware in every app, while the
collector blocks a user no test uses (``scripts/peers/run.py django``).

Run as ``python _inject_django.py <runtests.py arguments>`` from Django's ``tests`` folder.

- Every middleware chain Django builds gets ``SqreenMiddleware`` first, whatever
  ``settings.MIDDLEWARE`` says at that moment (the suite overrides it constantly).
- The app registry gets ``sqreen.integrations.django`` and its ``auth`` app whenever it holds
  ``django.contrib.auth`` (``available_apps`` subsets too): the session check is on.
- The SDK sends nowhere: every reply hands back an action set blocking ``NOBODY``, so that
  ``Blocklist.has_users`` holds and every request's user is checked, none refused.

Each process (the parallel runner's workers too) writes what it saw to a JSON file in the
folder ``SQREEN_PEER_REPORT`` names: the checks made, the refusals (none expected), the
middlewares built without the block in force, and the SDK's internal errors.
"""

from __future__ import annotations

import atexit
import json
import logging
import multiprocessing.util
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import sqreen
from sqreen._hub import get_client
from sqreen.transports import Reply, ScriptedTransport

#: A user no test of Django's logs in as.
NOBODY = "sqreen-peer-nobody"
BLOCK = {"id": "b1", "type": "block_user", "user": {"username": NOBODY}}
ACTIONS = {"version": 1, "items": [BLOCK]}
OURS = "sqreen.integrations.django.SqreenMiddleware"
APPS = ["sqreen.integrations.django", "sqreen.integrations.django.auth"]

# The SDK's warnings (the test client's requests come from 127.0.0.1 without a forwarded
# header) are written by its thread into runtests.py's lines; its internal errors are
# counted on the client, and reported.
logging.getLogger("sqreen").addHandler(logging.NullHandler())
client = sqreen.init(
    transport=ScriptedTransport(lambda call: Reply("ok", actions=ACTIONS)), spool=False
)
client.blocklist.apply(ACTIONS)
assert client.blocklist.has_users

import django.conf  # noqa: E402
from django.apps import registry  # noqa: E402
from django.core.handlers import base  # noqa: E402

from sqreen.integrations.django import _middleware, checks  # noqa: E402


class _Settings:
    """``django.conf.settings``, with sqreen's middleware first in ``MIDDLEWARE``."""

    def __getattr__(self, name: str) -> Any:
        value = getattr(django.conf.settings, name)
        if name == "MIDDLEWARE":
            value = [OURS, *(m for m in value or () if m != OURS)]
        return value


base.settings = checks.settings = _Settings()  # type: ignore[assignment]


def _with_ours(names: Any) -> Any:
    """``names`` (apps), with sqreen's when Django's auth app is one of them."""
    names = list(names)
    auth = "django.contrib.auth"
    if any(n == auth or str(n).startswith(auth + ".apps.") for n in names):
        names += [a for a in APPS if a not in names]
    return names


_populate, _set_available = registry.Apps.populate, registry.Apps.set_available_apps


def _populate_with_ours(self: Any, installed_apps: Any = None) -> Any:
    if self is registry.apps and installed_apps is not None:
        installed_apps = _with_ours(installed_apps)
    return _populate(self, installed_apps)


def _available_with_ours(self: Any, available: Any) -> Any:
    if self is registry.apps:
        installed = {c.name for c in self.get_app_configs()}
        available = [a for a in _with_ours(available) if a in installed or a not in APPS]
    return _set_available(self, available)


registry.Apps.populate = _populate_with_ours  # type: ignore[method-assign]
registry.Apps.set_available_apps = _available_with_ours  # type: ignore[method-assign]

seen = {"checks": 0, "refused": 0, "built": 0, "built_without_block": 0}
_for_check, _refuse_user = _middleware._for_check, _middleware._refuse_user
_init = _middleware.SqreenMiddleware.__init__


def _counted_check(request: Any, *attrs: str) -> Any:
    found = _for_check(request, *attrs)
    seen["checks"] += found is not None
    return found


def _counted_refusal(*args: Any) -> Any:
    refusal = _refuse_user(*args)
    seen["refused"] += refusal is not None
    return refusal


def _counted_init(self: Any, get_response: Any) -> None:
    _init(self, get_response)
    seen["built"] += 1
    seen["built_without_block"] += not get_client().blocklist.has_users


_middleware._for_check = _counted_check
_middleware._refuse_user = _counted_refusal
_middleware.SqreenMiddleware.__init__ = _counted_init  # type: ignore[method-assign]


def _report() -> None:
    folder = Path(os.environ["SQREEN_PEER_REPORT"])
    folder.mkdir(parents=True, exist_ok=True)
    report = dict(seen, internal_errors=get_client().internal_errors)
    (folder / f"{os.getpid()}.json").write_text(json.dumps(report))


atexit.register(_report)
# The parallel runner's workers are forked, and leave through multiprocessing's exit.
multiprocessing.util.register_after_fork(
    _report, lambda _: multiprocessing.util.Finalize(None, _report, exitpriority=100)
)

if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())  # as runtests.py run itself has it: its settings modules
    sys.argv = [str(Path("runtests.py").resolve()), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
