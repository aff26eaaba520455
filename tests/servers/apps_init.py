"""``tests.servers.apps_init:app``: :data:`~tests.servers.apps.asgi_app_http_only` with
``sqreen.init()`` called at import, as Sqreen's agent was started: in a ``--preload`` master
the client is made there, and each worker inherits it, unstarted."""

from __future__ import annotations

import sqreen

from .apps import asgi_app_http_only as app

sqreen.init()

__all__ = ["app"]
