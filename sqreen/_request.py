"""The frozen request snapshot an event carries: what is copied on the caller's thread.

:func:`snapshot_wsgi` and :func:`snapshot_asgi` run on the caller's thread inside ``track()``:
they copy a handful of strings (or header bytes) and the *references* to the body chunks the
app has read so far, and keep no reference to the environ or scope. Everything else (decoding,
parsing the query string and the body, :mod:`sqreen._request_params`) happens on the flusher
thread, when :func:`sqreen._wire.encode_request` builds the wire form, with the standard
library only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MethodType
from typing import TYPE_CHECKING, Any, Protocol

from ._limits import InvalidEvent
from ._request_params import MAX_PARAMS, parse_body, parse_query
from ._text import clipped
from ._values import note

if TYPE_CHECKING:
    from ._config import Config

__all__ = [
    "BodySource",
    "RequestSnapshot",
    "asgi_peer",
    "snapshot_asgi",
    "snapshot_of",
    "snapshot_wsgi",
    "text",
    "wsgi_peer",
    "wsgi_rewritten",
]

#: ``(route template, path parameters)`` of the matched route, when the framework knows them.
RouteGetter = Callable[[], tuple[str | None, Mapping[str, Any] | None]]


class BodySource(Protocol):
    """What the app has read of its request body so far (the tee, or a framework's cache)."""

    def capture(self) -> tuple[tuple[bytes, ...], bool]:
        """Return the chunks read so far (capped) and whether the body went past the cap."""
        ...


class RequestSnapshot:
    __slots__ = (
        "body_chunks",
        "body_truncated",
        "content_type",
        "forwarded",
        "method",
        "path",
        "path_params",
        "peer",
        "peer_rewritten",
        "query",
        "raw_path_bytes",
        "route",
        "user_agent",
    )

    def __init__(
        self,
        method: str | None,
        path: str,
        query: str | bytes,
        peer: str | None,
        user_agent: str | bytes | None,
        forwarded: str | bytes | None,
        content_type: str | bytes | None,
        route: str | None = None,
        path_params: Mapping[str, Any] | None = None,
        body_chunks: tuple[bytes, ...] = (),
        body_truncated: bool = False,
        raw_path_bytes: bool = False,
        peer_rewritten: bool = False,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.peer = peer
        #: The server replaced the peer with a hop of a forwarded header and kept no trace of
        #: the connection (see :func:`asgi_peer`).
        self.peer_rewritten = peer_rewritten
        self.user_agent = user_agent
        self.forwarded = forwarded
        self.content_type = content_type
        self.route = route
        self.path_params = dict(path_params) if path_params else None
        self.body_chunks = body_chunks
        self.body_truncated = body_truncated
        # WSGI paths are bytes decoded as latin-1 (PEP 3333); re-decode them as UTF-8 later.
        self.raw_path_bytes = raw_path_bytes

    @property
    def weight(self) -> int:
        """What it holds, in bytes (about): counted against ``max_queue_bytes`` while its
        event waits, body chunks included. (Computed, not kept: a slot and an int more per
        queued event.)"""
        user_agent, forwarded = self.user_agent, self.forwarded
        return (
            sum(map(len, self.body_chunks))
            + len(self.path)
            + len(self.query)
            + (len(user_agent) if user_agent else 0)
            + (len(forwarded) if forwarded else 0)
            + 256
        )

    def slimmed(self, clip: int) -> RequestSnapshot:
        """A copy without the body, its query and User-Agent cut to ``clip`` characters (at a
        word: they are scrubbed after, and a secret cut in two no longer looks like one) and
        its forwarded header to its last ``clip`` (the hops nearest this server, from which
        the client IP is read): what a client can pad, bounded (see :mod:`sqreen._reserve`).
        A copy: a request's snapshot may be shared by several of its events."""
        user_agent, forwarded = self.user_agent, self.forwarded
        return RequestSnapshot(
            self.method,
            self.path,
            clipped(self.query, clip),
            self.peer,
            clipped(user_agent, clip) if user_agent else user_agent,
            forwarded[-clip:] if forwarded else forwarded,
            self.content_type,
            self.route,
            self.path_params,
            (),
            bool(self.body_chunks) or self.body_truncated,
            self.raw_path_bytes,
            self.peer_rewritten,
        )

    def share(self) -> None:
        """Offer its repeatable strings for later snapshots to share (on the flusher). The
        same strings as the last snapshot's (requests from one client, most of a batch: one
        tuple comparison, the objects themselves since the caller took the shared copies)
        were offered then: 1.5 -> 0.3 µs a login event (load 7 on 2 cores)."""
        global _last_offered
        values = (self.method, self.peer, self.user_agent, self.forwarded, self.content_type)
        if values == _last_offered:
            return
        cleared = False
        for value in values:
            if (type(value) is str or type(value) is bytes) and len(value) <= _SHARED_LEN:
                if len(_SHARED) >= _SHARED_MAX:
                    _SHARED.clear()
                    cleared = True
                _SHARED.setdefault(value, value)
        _last_offered = () if cleared else values

    def decoded_path(self) -> str:
        path = self.path
        if self.raw_path_bytes and not path.isascii():  # ASCII is the same in UTF-8
            return path.encode("latin-1", "replace").decode("utf-8", "replace")
        return path

    def media_type(self) -> str:
        """The Content-Type with its type and subtype in lower case, its parameters as sent:
        a multipart boundary is case-sensitive (RFC 2046; browsers' hold capitals,
        ``----WebKitFormBoundary...``), and lowered it matched nothing in the body, whose
        text fields were all recorded as ``[multipart]``."""
        media, sep, parameters = (text(self.content_type) or "").partition(";")
        return media.strip().lower() + sep + parameters

    def body(self) -> bytes:
        return b"".join(self.body_chunks) if self.body_chunks else b""

    def params(self, body: bytes, content_type: str) -> dict[str, Any]:
        """The query string and the form or JSON body as one dict, bounded, not scrubbed."""
        params = parse_query(text(self.query) or "")
        if body:
            for key, value in parse_body(body, content_type, self.body_truncated).items():
                if key not in params and len(params) < MAX_PARAMS:
                    params[key] = value
        return params


#: Request strings that repeat from request to request (methods, content types, user
#: agents, peers, forwarded headers), one copy each: a queued event refers to the shared
#: copy, and the server's own copy is freed with its request. 1176 bytes a queued login event
#: before, 790 after (``bench/bench_flusher.py``, tracemalloc). The caller's thread only looks
#: values up (one C call each); the flusher adds those it encodes (:meth:`RequestSnapshot.
#: share`). Bounded: cleared when full.
_SHARED: dict[Any, Any] = {}
_SHARED_MAX = 1024
_SHARED_LEN = 256
_shared = _SHARED.get
#: The values :meth:`RequestSnapshot.share` offered last, all in _SHARED (forgotten when
#: offering them cleared it, so that they are offered again).
_last_offered: tuple[Any, ...] = ()


def text(value: str | bytes | None) -> str | None:
    if value is None or type(value) is str:
        return value
    return value.decode("latin-1")  # type: ignore[union-attr]


def wsgi_rewritten(environ: Mapping[str, Any]) -> bool:
    """Whether the peer of a WSGI environ (or a Django ``META``) is a forwarded header's hop
    the server put there, port 0 (no connection has it): Django under an ASGI server whose
    proxy headers are on (uvicorn's ``--forwarded-allow-ips``, daphne's ``--proxy-headers``,
    hypercorn's ``ProxyFixMiddleware``) copies ``scope["client"]`` into ``META``, and sqreen
    cannot see the connection there (see :func:`asgi_peer`)."""
    port = environ.get("REMOTE_PORT")
    return port == 0 or port == "0"


def wsgi_peer(environ: Mapping[str, Any]) -> str | None:
    """The address of the connection a WSGI request came on: ``REMOTE_ADDR``, or the one
    werkzeug's ``ProxyFix`` replaced (it keeps it in ``werkzeug.proxy_fix.orig``)."""
    orig = environ.get("werkzeug.proxy_fix.orig")
    if type(orig) is dict and "REMOTE_ADDR" in orig:
        addr = orig["REMOTE_ADDR"]
        return addr if isinstance(addr, str) else None
    return environ.get("REMOTE_ADDR")


def asgi_peer(scope: Mapping[str, Any], receive: object = None) -> tuple[str | None, bool]:
    """The address of the connection an ASGI request came on, and whether it is only what a
    forwarded header said (``(peer, rewritten)``).

    ``scope["client"]`` is not always the connection's address. uvicorn (and gunicorn's
    uvicorn worker) replaces it with a hop of ``X-Forwarded-For`` when the connection comes
    from one of its ``forwarded_allow_ips`` (127.0.0.1 by default, anyone with ``*``, and
    then the left-most hop, which the client writes), but ``receive`` is a method of the
    object holding the connection's asyncio transport, whose ``peername`` is the real one:
    it is used whenever it is there. hypercorn's ``ProxyFixMiddleware`` and daphne's
    ``--proxy-headers`` keep no trace of the connection; they set the port to 0, which no
    connection has: ``rewritten`` is then True, and the caller does not take that hop for
    the peer (:func:`sqreen._client_ip.resolve_client_ip`).
    """
    found = _transport_peer(receive)
    if found is not _NO_PEER:
        return found, False
    client = scope.get("client")
    if not client:
        return None, False
    port = client[1] if len(client) > 1 else None
    if port == 0 or port == "0":
        # The server's pick. A middleware outside sqreen's may have wrapped the server's
        # ``receive`` (Starlette's BaseHTTPMiddleware, ``@app.middleware("http")``): the
        # connection is looked for behind it, here only (a few objects, once a request).
        found = _wrapped_transport_peer(receive)
        if found is not _NO_PEER:
            return found, False
        return client[0], True
    return client[0], False


#: What :func:`_transport_peer` gives when ``receive`` holds no transport.
_NO_PEER: Any = object()
#: Callables looked into behind a wrapped ``receive``, at most.
_MOST_WRAPPERS = 24


def _transport_peer(receive: object) -> Any:
    """The peer of the asyncio transport that ``receive`` (a bound method) holds: an
    address, None for a Unix socket, or :data:`_NO_PEER`."""
    # Looked up without raising (AttributeError costs more than the rest): a bound method, an
    # instance dict, a transport in it.
    attrs = getattr(receive.__self__, "__dict__", None) if type(receive) is MethodType else None
    transport = attrs.get("transport") if attrs else None
    get_extra_info = getattr(transport, "get_extra_info", None) if transport is not None else None
    if get_extra_info is None:
        return _NO_PEER
    try:
        peername = get_extra_info("peername")
    except Exception:  # not an asyncio transport after all
        return _NO_PEER
    if type(peername) is tuple and peername and isinstance(peername[0], str):
        return peername[0]
    if peername == "":  # a Unix socket
        return None
    return _NO_PEER


def _wrapped_transport_peer(receive: object) -> Any:
    """:func:`_transport_peer` of the ``receive`` a wrapper holds: the callables in its
    closure and, for a bound method, in its object's attributes, breadth first, a few."""
    queue = [receive]
    seen = {id(receive)}
    for node in queue:
        found = _transport_peer(node)
        if found is not _NO_PEER:
            return found
        inner: list[object] = []
        if type(node) is MethodType:
            inner += getattr(node.__self__, "__dict__", {}).values()
            node = node.__func__
        for cell in getattr(node, "__closure__", None) or ():
            try:
                inner.append(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
        for item in inner:
            if callable(item) and id(item) not in seen and len(queue) < _MOST_WRAPPERS:
                seen.add(id(item))
                queue.append(item)
    return _NO_PEER


def snapshot_wsgi(
    environ: Mapping[str, Any],
    forwarded_key: str,
    route: RouteGetter | None,
    body: BodySource | None,
) -> RequestSnapshot:
    """Freeze what an event needs of a WSGI environ (or a Django ``META``)."""
    template, path_params = route() if route is not None else (None, None)
    chunks, truncated = body.capture() if body is not None else ((), False)
    method, peer = environ.get("REQUEST_METHOD"), wsgi_peer(environ)
    agent, forwarded = environ.get("HTTP_USER_AGENT"), environ.get(forwarded_key)
    content_type = environ.get("CONTENT_TYPE")
    try:  # the shared copies (see _SHARED)
        method, peer, agent = _shared(method, method), _shared(peer, peer), _shared(agent, agent)
        forwarded, content_type = _shared(forwarded, forwarded), _shared(content_type, content_type)
    except TypeError:  # an unhashable value: not from a server, kept as it is
        pass
    return RequestSnapshot(
        method,
        environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
        environ.get("QUERY_STRING", ""),
        peer,
        agent,
        forwarded,
        content_type,
        template,
        path_params,
        chunks,
        truncated,
        raw_path_bytes=True,
        peer_rewritten=wsgi_rewritten(environ),
    )


def snapshot_asgi(
    scope: Mapping[str, Any],
    forwarded_name: bytes,
    route: RouteGetter | None,
    body: BodySource | None,
    peer: tuple[str | None, bool] | None = None,
) -> RequestSnapshot:
    """Freeze what an event needs of an ASGI HTTP scope; ``peer`` is :func:`asgi_peer`'s
    answer when the caller has it (the middleware's context looks it up once a request)."""
    user_agent = forwarded = content_type = None
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            user_agent = value
        elif name == forwarded_name:
            # Several header lines of the same name form one list (RFC 9110, 5.3).
            forwarded = value if forwarded is None else forwarded + b"," + value
        elif name == b"content-type":
            content_type = value
    if route is not None:
        template, path_params = route()
    else:
        r = scope.get("route")
        template = getattr(r, "path", None) if r is not None else None
        path_params = scope.get("path_params")
    address, rewritten = asgi_peer(scope) if peer is None else peer
    chunks, truncated = body.capture() if body is not None else ((), False)
    method = scope.get("method")
    try:  # the shared copies (see _SHARED)
        method, address = _shared(method, method), _shared(address, address)
        user_agent, forwarded = _shared(user_agent, user_agent), _shared(forwarded, forwarded)
        content_type = _shared(content_type, content_type)
    except TypeError:  # an unhashable value: not from a server, kept as it is
        pass
    return RequestSnapshot(
        method,
        scope.get("path", ""),
        scope.get("query_string", b""),
        address,
        user_agent,
        forwarded,
        content_type,
        template,
        path_params,
        chunks,
        truncated,
        peer_rewritten=rewritten,
    )


def snapshot_of(request: Any, config: Config, notes: list[InvalidEvent] | None) -> Any:
    """Snapshot an explicit ``request=``: a WSGI environ, an ASGI scope, or a Flask, Django
    or Starlette request; None (noted) for anything else."""
    if isinstance(request, Mapping):
        if request.get("type") in ("http", "websocket"):
            return snapshot_asgi(request, config.forwarded_header_name, None, None)
        if "REQUEST_METHOD" in request:
            return snapshot_wsgi(request, config.forwarded_environ_key, None, None)
    for attr, kind in (("environ", "wsgi"), ("META", "wsgi"), ("scope", "asgi")):
        source = getattr(request, attr, None)
        if isinstance(source, Mapping):
            if kind == "wsgi":
                return snapshot_wsgi(source, config.forwarded_environ_key, None, None)
            return snapshot_asgi(source, config.forwarded_header_name, None, None)
    note(
        notes,
        "request",
        "type",
        "must be a WSGI environ, an ASGI scope, or a Flask, Django or Starlette request, "
        f"not {type(request).__name__}",
    )
    return None
