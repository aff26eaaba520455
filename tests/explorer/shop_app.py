"""A small shop on FastAPI with the SDK, for the browser walkthrough (until the project's
FastAPI example replaces it). Configured from ``SQREEN_*`` variables; run with
``uvicorn tests.explorer.shop_app:app``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from sqreen.integrations.fastapi import Sqreen, SqreenMiddleware

USERS = {"alice": "correct horse", "bob": "hunter2hunter2"}

app = FastAPI()
app.add_middleware(SqreenMiddleware)


class Login(BaseModel):
    username: str
    password: str


class Export(BaseModel):
    report: str
    format: str = "csv"


@app.get("/")
def home() -> dict[str, str]:
    return {"shop": "open"}


@app.post("/login")
def login(form: Login, sqreen: Sqreen) -> JSONResponse:
    ok = USERS.get(form.username) == form.password
    sqreen.auth_track(ok, username=form.username)  # a blocked user gets a 403 here
    return JSONResponse({"ok": ok}, status_code=200 if ok else 401)


@app.post("/export")
def export(body: Export, request: Request, sqreen: Sqreen) -> dict[str, str]:
    sqreen.identify({"username": request.headers.get("x-user", "anonymous")})
    sqreen.track("report.exported", properties={"report": body.report, "format": body.format})
    return {"exported": body.report}
