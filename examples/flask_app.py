"""The Flask example: a sign-up, a login and a custom event, tracked with sqreen.

    python examples/flask_app.py                       # http://127.0.0.1:5000

    curl -X POST 127.0.0.1:5000/signup -d username=alice -d password=wonderland
    curl -X POST 127.0.0.1:5000/login -d username=alice -d password=wonderland
    curl -X POST 127.0.0.1:5000/export -H 'X-User: alice' -d report=q3-revenue

Configured by ``SQREEN_*`` environment variables (``SQREEN_ENDPOINT``, ``SQREEN_TOKEN``...) or
``app.config["SQREEN_..."]``; with neither, events go to ``./sqreen-events.jsonl``. The same
app exists for Django (``examples/django_app/``) and FastAPI (``examples/fastapi_app.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from flask import Flask, request

from sqreen.integrations.flask import Sqreen

app = Flask(__name__)
Sqreen(app)

#: username -> password hash. A toy store: use your own user model.
USERS: dict[str, str] = {}


def password_hash(password: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), b"toy-salt", 50_000).hex()


def fields() -> dict[str, Any]:
    return request.get_json(silent=True) or request.form.to_dict()


@app.get("/")
def index() -> Any:
    return {"app": "sqreen Flask example", "routes": ["/signup", "/login", "/export"]}


@app.post("/signup")
def signup() -> Any:
    data = fields()
    username, password = str(data.get("username", "")), str(data.get("password", ""))
    if not username or not password:
        return {"error": "username and password are required"}, 400
    if username in USERS:
        return {"error": "username taken"}, 409
    USERS[username] = password_hash(password)
    request.sqreen.signup_track(username=username)  # auth.signup, and identifies alice
    return {"username": username}, 201


@app.post("/login")
def login() -> Any:
    data = fields()
    username = str(data.get("username", ""))
    known = USERS.get(username, "")
    ok = bool(known) and hmac.compare_digest(known, password_hash(str(data.get("password", ""))))
    # auth.login.success or .failure; a blocked user (or IP) gets a 403 instead.
    request.sqreen.auth_track(ok, username=username)
    if not ok:
        return {"error": "invalid credentials"}, 401
    return {"username": username}


@app.post("/export")
def export() -> Any:
    username = request.headers.get("X-User", "")  # a toy: your session says who is logged in
    if username not in USERS:
        return {"error": "log in first"}, 401
    request.sqreen.identify({"username": username})
    data = fields()
    request.sqreen.track(
        "data.export.requested",
        properties={"format": str(data.get("format", "csv"))},
        target={"id": str(data.get("report", "")), "type": "report"},
    )
    return {"status": "queued"}, 202


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
