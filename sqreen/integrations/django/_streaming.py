"""A streaming response's chunks made with their request bound.

Django calls the middleware, which binds the request for the view and unbinds it when the
view returns its response. A :class:`~django.http.StreamingHttpResponse`'s content is
produced after that, as the server sends it: ``sqreen.track()`` (``auth_track``,
``identify``) called from its generator found no request, so its event had no IP, path or
user agent, and IP playbooks and blocks could not use it. The WSGI middleware binds the
request around each chunk (:class:`sqreen.middleware.wsgi._Response`); these wrappers do the
same for Django, sync and async, under WSGI and ASGI alike (Django's ASGI handler consumes a
sync iterator on a worker thread, whose context is a copy: the binding travels with each
``next()``). A :class:`~django.http.FileResponse` is left alone: replacing its content
would lose the server's ``sendfile`` (``wsgi.file_wrapper``), and a file calls no track.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from ..._context import RequestContext, current_request
from ...middleware._common import ResponseAborted, find_blocked, refused

if TYPE_CHECKING:
    from ..._blocking import Blocked

__all__ = ["bind_streaming"]


def bind_streaming(response: Any, ctx: RequestContext) -> None:
    """Have ``response`` (when it streams, and is no file) make each chunk with ``ctx`` bound."""
    if not getattr(response, "streaming", False) or getattr(response, "file_to_stream", None):
        return
    content = response.streaming_content
    response.streaming_content = (
        _abound(content, ctx) if getattr(response, "is_async", False) else _bound(content, ctx)
    )


def _bound(chunks: Iterable[bytes], ctx: RequestContext) -> Iterator[bytes]:
    iterator = iter(chunks)
    while True:
        token = current_request.set(ctx)
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except BaseException as exc:
            _abort_if_blocked(exc, ctx)
            raise
        finally:
            current_request.reset(token)
        _abort_if_refused(ctx)
        yield chunk


async def _abound(chunks: AsyncIterable[bytes], ctx: RequestContext) -> AsyncIterator[bytes]:
    iterator = aiter(chunks)
    while True:
        token = current_request.set(ctx)
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except BaseException as exc:
            _abort_if_blocked(exc, ctx)
            raise
        finally:
            current_request.reset(token)
        _abort_if_refused(ctx)
        yield chunk


def _abort_if_blocked(exc: BaseException, ctx: RequestContext) -> None:
    """A block raised while the response streams: its headers went, so the response is
    aborted (:func:`_abort`). As a ``BaseException``, the ``Blocked`` itself reached the
    server: gunicorn's threaded worker died of it, its sync worker wrote a 500 into the body."""
    blocked = find_blocked(exc)
    if blocked is not None:
        _abort(ctx, blocked)


def _abort_if_refused(ctx: RequestContext) -> None:
    """A block the stream caught (kept on the request): none of the rest of it goes (the
    rest went to the blocked user)."""
    if ctx.refused is not None:
        _abort(ctx, ctx.refused)


def _abort(ctx: RequestContext, blocked: Blocked) -> NoReturn:
    """Count the refusal and raise :class:`ResponseAborted`, which servers take as an error
    of the app and drop the connection for."""
    refused(ctx.client, ctx, blocked)
    raise ResponseAborted(str(blocked)) from blocked
