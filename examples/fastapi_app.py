"""The FastAPI example: a sign-up, a login and a custom event, tracked with sqreen.

    python examples/fastapi_app.py                     # http://127.0.0.1:8001
    uvicorn examples.fastapi_app:app --port 8001       # the same

    curl -X POST 127.0.0.1:8001/signup -H 'Content-Type: application/json' \\
         -d '{"username": "alice", "password": "wonderland"}'
    curl -X POST 127.0.0.1:8001/login -H 'Content-Type: application/json' \\
         -d '{"username": "alice", "password": "wonderland"}'
    curl -X POST 127.0.0.1:8001/export -H 'Content-Type: application/json' \\
         -H 'X-User: alice' -d '{"report": "q3-revenue"}'

Configured by ``SQREEN_*`` environment variables (``SQREEN_ENDPOINT``, ``SQREEN_TOKEN``...) or
keywords of ``add_middleware``; with neither, events go to ``./sqreen-events.jsonl``. The same
app exists for Flask (``examples/flask_app.py``) and Django (``examples/django_app/``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

from sqreen.integrations.fastapi import Sqreen, SqreenMiddleware

app = FastAPI(title="sqreen FastAPI example")
app.add_middleware(SqreenMiddleware)

#: username -> password hash. A toy store: use your own user model.
USERS: dict[str, str] = {}


class Credentials(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1)


class Export(BaseModel):
    report: str
    format: str = "csv"


def password_hash(password: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), b"toy-salt", 50_000).hex()


@app.get("/")
def index() -> Any:
    return {"app": "sqreen FastAPI example", "routes": ["/signup", "/login", "/export"]}


@app.post("/signup", status_code=201)
def signup(credentials: Credentials, sqreen: Sqreen) -> Any:
    if credentials.username in USERS:
        raise HTTPException(409, "username taken")
    USERS[credentials.username] = password_hash(credentials.password)
    sqreen.signup_track(username=credentials.username)  # auth.signup, and identifies alice
    return {"username": credentials.username}


@app.post("/login")
def login(credentials: Credentials, sqreen: Sqreen) -> Any:
    known = USERS.get(credentials.username, "")
    ok = bool(known) and hmac.compare_digest(known, password_hash(credentials.password))
    # auth.login.success or .failure; a blocked user (or IP) gets a 403 instead.
    sqreen.auth_track(ok, username=credentials.username)
    if not ok:
        raise HTTPException(401, "invalid credentials")
    return {"username": credentials.username}


@app.post("/export", status_code=202)
def export(body: Export, sqreen: Sqreen, x_user: str = Header(default="")) -> Any:
    if x_user not in USERS:  # a toy: your session says who is logged in
        raise HTTPException(401, "log in first")
    sqreen.identify({"username": x_user})
    sqreen.track(
        "data.export.requested",
        properties={"format": body.format},
        target={"id": body.report, "type": "report"},
    )
    return {"status": "queued"}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8001")))
