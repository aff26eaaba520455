"""The FastAPI test app (see :mod:`.common`); ``app`` is what uvicorn and gunicorn serve."""

from __future__ import annotations

from typing import Any

from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse

import sqreen
from sqreen.integrations.fastapi import Sqreen, SqreenHandle, SqreenMiddleware, sqreen_handle

from . import common


def create_app(with_sqreen: bool = True) -> FastAPI:
    app = FastAPI()
    if with_sqreen:
        options: dict[str, Any] = {"trusted_proxies": []} if common.UNTRUSTED else {}
        app.add_middleware(SqreenMiddleware, **options)

    def handle(request: Request) -> Any:
        return getattr(request.state, "sqreen", None) or common.Null()

    @app.api_route("/echo/{name}", methods=["GET", "POST", "PUT"])
    async def echo(name: str, request: Request) -> Any:
        if request.query_params.get("early"):
            handle(request).track("echo.early", properties={"name": name})
        body = await request.body()
        collect = bool(request.query_params.get("collect"))
        handle(request).track("echo", properties={"name": name}, collect_body=collect)
        return common.digest(body, name)

    @app.post("/form")
    async def form(request: Request) -> Any:
        async with request.form() as data:
            fields = {k: v for k, v in data.items() if isinstance(v, str)}
            files = {k: len(await v.read()) for k, v in data.items() if not isinstance(v, str)}
        handle(request).track("form", properties={"fields": len(fields)})
        return {"fields": fields, "files": files}

    @app.get("/identify")
    def identify(request: Request, uid: str, marker: str = "") -> Any:  # a sync endpoint
        handle(request).identify({"uid": uid})
        handle(request).track("identified", properties={"marker": marker})
        if "as" in request.query_params:
            handle(request).track("override", user_identifiers={"uid": request.query_params["as"]})
        return {"ok": True}

    @app.get("/guarded")
    async def guarded(request: Request, uid: str, marker: str = "", broad: str = "") -> Any:
        try:
            handle(request).identify({"uid": uid})
        except Exception:  # a catch-all in the app must not defeat the block
            pass
        except BaseException:  # ?broad=1: nor this one (the middleware refuses at the end)
            if not broad:
                raise
        handle(request).track("guarded", properties={"marker": marker})
        return PlainTextResponse("served")

    @app.get("/count")
    async def count() -> Any:
        return common.count()

    @app.get("/barrier")
    async def barrier(request: Request, uid: str, run: str, n: int) -> Any:
        handle(request).identify({"uid": uid})
        await common.async_barrier(run, n).wait()
        handle(request).track("isolation", properties={"uid": uid, "run": run})
        return {"uid": uid}

    @app.get("/dependency/{item}")
    def dependency(item: int, sq: Sqreen, tasks: BackgroundTasks) -> Any:
        sq.identify({"uid": f"dep-{item}"})
        tasks.add_task(_in_background, item)
        return {"item": item}

    @app.get("/explicit")
    async def explicit(handle: SqreenHandle = Depends(sqreen_handle)) -> Any:  # noqa: B008
        handle.track("explicit.dependency")
        return {"ok": True}

    return app


def _in_background(item: int) -> None:
    sqreen.track("background.task", properties={"item": item})


app = create_app()
