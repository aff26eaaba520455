"""What a FastAPI app written as the README says looks like to ``mypy --strict`` (checked by
``make typecheck``, not run): the middleware added, the handle as a dependency and passed on
to a helper typed with it."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.applications import Starlette

from sqreen.integrations.fastapi import Sqreen, SqreenMiddleware
from sqreen.integrations.starlette import SqreenMiddleware as StarletteMiddleware
from sqreen.integrations.starlette import sqreen_handle

app = FastAPI()
app.add_middleware(SqreenMiddleware, endpoint="http://127.0.0.1:8000", token="sqk_...")
Starlette().add_middleware(StarletteMiddleware)


def check(sqreen: Sqreen, ok: bool) -> None:
    sqreen.auth_track(ok, username="alice")


@app.post("/login")
def login(request: Request, sqreen: Sqreen) -> dict[str, bool]:
    check(sqreen, True)
    check(sqreen_handle(request), False)
    return {"ok": True}
