"""Flask integration: one extension, then ``request.sqreen`` in every view.

::

    from flask import Flask, request
    from sqreen.integrations.flask import Sqreen

    app = Flask(__name__)
    app.config["SQREEN_ENDPOINT"] = "http://127.0.0.1:8000"   # or SQREEN_* in the environment
    Sqreen(app)            # or: sqreen_ext = Sqreen(); sqreen_ext.init_app(app)

    @app.post("/login")
    def login():
        request.sqreen.auth_track(True, username="alice")

``init_app`` configures the SDK from ``app.config["SQREEN_*"]`` (:func:`sqreen.init`'s
keywords win where both set an option: see :mod:`sqreen._hub`), wraps ``app.wsgi_app`` in
:class:`~sqreen.middleware.wsgi.SqreenWSGIMiddleware` (so blocks are enforced before Flask
even builds its request), and gives the app's request class a ``sqreen`` attribute that reads
``environ["sqreen.context"]``: no ``Request`` subclass to conflict with the app's own, no hook
to run per request, and async views see the same object. Outside the middleware (a view
tested in ``app.test_request_context()``) it is a handle without a request: events are
tracked as :func:`sqreen.track` tracks them, without request data, and ``identify()`` binds
nothing.
Events carry the matched rule (``/users/<int:id>``) and ``view_args``.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    import flask
except ImportError as exc:  # pragma: no cover - exercised without Flask installed
    raise ImportError(
        "sqreen.integrations.flask needs Flask: install with pip install 'sqreen-sdk[flask]'"
    ) from exc


from .._requestless import HandleAttribute
from ..middleware._common import framework_init
from ..middleware.wsgi import ENVIRON_KEY, SqreenWSGIMiddleware

__all__ = ["Sqreen"]


class Sqreen:
    """The Flask extension: ``Sqreen(app)`` or ``Sqreen()`` then ``init_app(app)``."""

    def __init__(self, app: flask.Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        settings = {k: v for k, v in app.config.items() if k.startswith("SQREEN_")}
        framework_init(settings, "flask")
        if "sqreen" in app.extensions:  # already wrapped
            return
        app.extensions["sqreen"] = self
        app.wsgi_app = SqreenWSGIMiddleware(app.wsgi_app, route=_route)  # type: ignore[method-assign]
        if not hasattr(app.request_class, "sqreen"):
            app.request_class.sqreen = _HANDLE  # type: ignore[attr-defined]


def _environ_handle(request: Any) -> Any:
    return request.environ.get(ENVIRON_KEY)


#: ``request.sqreen``: the handle the middleware put in the environ; outside it (a view
#: tested in ``app.test_request_context()``), the handle without a request, which tracks as
#: :func:`sqreen.track` does (see :mod:`sqreen._requestless`).
_HANDLE = HandleAttribute(_environ_handle)


def _route(environ: Any) -> tuple[str | None, Mapping[str, Any] | None]:
    # Werkzeug keeps the request in the environ while Flask's request context is pushed. A
    # streamed response's generator (``stream_with_context``) runs with the context pushed
    # again, once Flask's first pop took the request out of the environ: ``flask.request``
    # is still that request's there.
    request = environ.get("werkzeug.request")
    if request is None:
        if not flask.has_request_context() or flask.request.environ is not environ:
            return None, None
        request = flask.request
    rule = getattr(request, "url_rule", None)
    return (rule.rule if rule is not None else None), getattr(request, "view_args", None)
