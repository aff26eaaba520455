"""Errors the collector's API answers with: always JSON, ``{"error": ..., "field"?: ...}``;
and :func:`int_param`, the integer query parameter read by several routes (a 400 naming it
when it is not one)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["EXCEPTION_HANDLERS", "ApiError", "QuietDisconnects", "int_param"]


class ApiError(Exception):
    """A client error to answer with ``status`` and a JSON body naming the problem."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body: dict[str, str] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return JSONResponse(body, status_code=self.status, headers=self.headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return ApiError(exc.status_code, exc.detail, headers=exc.headers).response()


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Starlette logs the exception after this; the client (an SDK) retries on 5xx.
    return ApiError(500, "internal error: the collector logged it").response()


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}


class QuietDisconnects:
    """An ASGI layer that lets a request whose client went away mid-body end quietly.

    Reading the body then raises ``ClientDisconnect``: a client that hung up, or one cut by
    ``sqreen serve``'s body timeout. There is nobody left to answer, and nothing went wrong
    here: without this, each one logged a traceback (one per hostile connection)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            pass


def int_param(request: Request, name: str, low: int = -1, high: int = 2**62) -> int | None:
    """Query parameter ``name`` as an integer from ``low`` to ``high`` (None when absent),
    or a 400 naming it."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = int(float(raw)) if len(raw) < 32 else None
    except (ValueError, OverflowError):
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(400, f"must be an integer from {low} to {high}", field=name)
    return value
