"""The FastAPI app the uvicorn shutdown tests serve (see :mod:`tests.servers.apps`).

Unlike the bare ASGI app there, its middleware is built by Starlette at the first lifespan
event or request, once uvicorn has taken SIGTERM for itself: sqreen finds uvicorn's handler
then, never the default.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Request

from sqreen.integrations.fastapi import SqreenMiddleware

app = FastAPI()
app.add_middleware(SqreenMiddleware)


@app.get("/track")
def track(request: Request, n: int = 0) -> dict[str, object]:
    request.state.sqreen.track("server.event", properties={"n": n})
    return {"pid": os.getpid(), "peer": request.client.host if request.client else None}


@app.get("/ping")
def ping() -> dict[str, object]:
    return {"pid": os.getpid()}
