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

``init_app`` configures the SDK from ``app.config["SQREEN_*"]`` (unless :func:`sqreen.init`
was called), wraps ``app.wsgi_app`` in :class:`~sqreen.middleware.wsgi.SqreenWSGIMiddleware`
(so blocks are enforced before Flask even builds its request) and registers, first among the
app's ``before_request`` functions, one that sets ``request.sqreen`` from
``environ["sqreen"]``: no ``Request`` subclass to conflict with the app's own, and async views
see the same object. The request is unbound in ``teardown_request``, where Flask ends it.
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


from ..middleware._common import framework_init
from ..middleware.wsgi import SqreenWSGIMiddleware, release

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
        app.before_request_funcs.setdefault(None, []).insert(0, _expose_handle)
        app.teardown_request(_end_request)


def _expose_handle() -> None:
    # Resolve the proxy once: each attribute access through it costs a context lookup.
    request = flask.request._get_current_object()  # type: ignore[attr-defined]
    request.sqreen = request.environ.get("sqreen")


def _end_request(exc: BaseException | None) -> None:
    # Flask's request ends here (after the stream, with stream_with_context), and a test
    # client that never closes the response would otherwise leave it bound.
    release(flask.request._get_current_object().environ)  # type: ignore[attr-defined]


def _route(environ: Any) -> tuple[str | None, Mapping[str, Any] | None]:
    # Werkzeug keeps the request in the environ while Flask's request context is pushed.
    request = environ.get("werkzeug.request")
    if request is None:
        return None, None
    rule = getattr(request, "url_rule", None)
    return (rule.rule if rule is not None else None), getattr(request, "view_args", None)
