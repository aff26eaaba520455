"""The Flask app ``flask run`` serves in these tests (see :mod:`tests.servers.apps`)."""

from __future__ import annotations

import os

from flask import Flask, request

from sqreen.integrations.flask import Sqreen

app = Flask(__name__)
Sqreen(app)


@app.get("/track")
def track() -> dict[str, object]:
    request.sqreen.track("server.event", properties={"n": request.args.get("n", 0, type=int)})
    return {"pid": os.getpid(), "peer": request.remote_addr}
