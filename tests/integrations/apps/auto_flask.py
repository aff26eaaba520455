"""A Flask app written for Sqreen's agent: ``sqreen.start()``, then the module functions in
its views, and no integration set up (:mod:`sqreen._instrument` gives it one).

``AUTO_TEST_ORDER=app-first`` builds the app before ``sqreen.start()`` (else after it, with
Flask imported after it too); ``AUTO_TEST_EXPLICIT=1`` also sets the integration up by hand.

``/login`` (POST form ``username``, ``password``)  ``sqreen.auth_track()``
``/identify?uid=U&marker=M``  ``sqreen.identify()``, then ``identified`` tracked
``/layers``  how many of sqreen's WSGI middlewares wrap the app
"""

from __future__ import annotations

import os
import sys
from typing import Any

import sqreen

APP_FIRST = os.environ.get("AUTO_TEST_ORDER") == "app-first"

if APP_FIRST:
    from flask import Flask

    app = Flask(__name__)
    sqreen.start()
else:
    sqreen.start()
    #: Whether Flask was imported when sqreen.start() ran (it must not be: nothing imports it)
    FLASK_BEFORE_APP = "flask" in sys.modules
    from flask import Flask

    app = Flask(__name__)

from flask import request  # noqa: E402

from sqreen.middleware.wsgi import SqreenWSGIMiddleware  # noqa: E402

if os.environ.get("AUTO_TEST_EXPLICIT") == "1":
    from sqreen.integrations.flask import Sqreen

    Sqreen(app)

PASSWORDS = {"alice": "wonderland"}


@app.before_request
def _first_request_hooks_still_allowed() -> None:
    pass


@app.post("/login")
def login() -> Any:
    username = request.form["username"]
    ok = PASSWORDS.get(username) == request.form["password"]
    sqreen.auth_track(ok, username=username)
    sqreen.track("login.form", properties={"ok": ok})
    return ("welcome", 200) if ok else ("wrong username or password", 401)


@app.get("/identify")
def identify() -> Any:
    sqreen.identify({"uid": request.args["uid"]})
    sqreen.track("identified", properties={"marker": request.args.get("marker", "")})
    return {"ok": True}


@app.get("/layers")
def layers() -> Any:
    count, wrapped = 0, app.wsgi_app
    while wrapped is not None:
        count += isinstance(wrapped, SqreenWSGIMiddleware)
        wrapped = getattr(wrapped, "app", None)
    return {"layers": count, "pid": os.getpid()}
