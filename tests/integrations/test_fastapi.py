"""What is particular to FastAPI and Starlette (the shared scenarios are in test_scenarios.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import sqreen
from sqreen.integrations.fastapi import Sqreen, SqreenMiddleware
from sqreen.integrations.starlette import SqreenMiddleware as StarletteMiddleware
from sqreen.testing import CapturedEvents
from tests.integrations.apps.fastapi_app import create_app
from tests.receiver import Receiver


def client(app: Any) -> TestClient:
    return TestClient(app, client=("127.0.0.1", 50000))


def test_the_dependency_sync_endpoints_and_background_tasks(sqreen_events: CapturedEvents) -> None:
    with client(create_app()) as c:
        assert c.get("/dependency/5").json() == {"item": 5}
        assert c.get("/explicit").json() == {"ok": True}
    background, explicit = sqreen_events
    # identify() ran in the thread pool; the task ran after the response: same user.
    assert background["name"] == "background.task"
    assert background["user"] == {"uid": "dep-5"}
    assert background["request"]["route"] == "/dependency/{item}"
    assert explicit["name"] == "explicit.dependency"


def test_the_dependency_without_the_middleware_says_what_to_do() -> None:
    app = FastAPI()

    @app.get("/")
    def index(sq: Sqreen) -> str:
        return "unreachable"

    with pytest.raises(RuntimeError, match="add_middleware"):
        client(app).get("/")


def test_middleware_keywords_configure_the_sdk(receiver: Receiver) -> None:
    app = FastAPI()
    app.add_middleware(SqreenMiddleware, endpoint=receiver.url, app_name="fastapi-kw")

    @app.get("/items/{item_id}")
    async def item(item_id: int, request: Request) -> Any:
        request.state.sqreen.track("kw", properties={"item": item_id})
        return {}

    client(app).get("/items/3")
    assert sqreen.flush(5.0)
    (event,) = receiver.events
    assert event["request"]["route"] == "/items/{item_id}"
    assert receiver.batches[0]["app"]["framework"] == "fastapi"
    assert receiver.batches[0]["app"]["name"] == "fastapi-kw"


def test_plain_starlette_finds_the_route_template_through_mounts(
    sqreen_events: CapturedEvents,
) -> None:
    async def view(request: Request) -> PlainTextResponse:
        request.state.sqreen.track("starlette.view")
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/top/{a}", view),
            Mount("/api", routes=[Mount("/v1", routes=[Route("/users/{uid:int}", view)])]),
        ]
    )
    app.add_middleware(StarletteMiddleware)
    with client(app) as c:
        assert c.get("/top/x").text == "ok"
        assert c.get("/api/v1/users/42").text == "ok"
    top, nested = sqreen_events
    assert top["request"]["route"] == "/top/{a}"
    assert nested["request"]["route"] == "/api/v1/users/{uid:int}"
    assert nested["request"]["path"] == "/api/v1/users/42"


def test_lifespan_still_reaches_the_app(sqreen_events: CapturedEvents) -> None:
    started: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        started.append(True)
        yield
        started.append(False)

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(SqreenMiddleware)
    with client(app):
        pass
    assert started == [True, False]
