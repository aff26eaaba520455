"""Logging in and out of the explorer, and what keeps a flood of logins harmless.

A login attempt, in order:

1. its client's *key* (:func:`client_key`): the address of the connection, read from the
   server's transport as the SDK reads it (:func:`sqreen._request.asgi_peer`), never what a
   forwarded header says (uvicorn rewrites ``scope["client"]`` from ``X-Forwarded-For`` for
   loopback peers, so a local client would choose its key), unless the collector is told to
   trust a proxy (``SQREEN_EXPLORER_TRUSTED_PROXIES``): then the header is walked from the
   right by the SDK's rule (:func:`sqreen._client_ip.resolve_client_ip`). IPv6 addresses
   count by /64, which one machine usually holds whole, and a Teredo or 6to4 address as
   its IPv4 client (as playbooks group them), which holds a Teredo address per port and a
   6to4 /48;
2. a key this process knows to be locked out is refused at once (429), with no I/O;
3. a place in the :class:`Hasher`, which checks passwords (scrypt: 32 MiB and ~0.1 s each) on
   a thread of its own, :data:`HASH_THREADS` at a time per process with at most
   :data:`HASH_WAITING` more waiting: a login flood neither takes the threads the ingest API
   runs on nor grows memory past one hash a thread. Past that, 429 at once (``Retry-After:
   1``): waiting longer would only queue a legitimate login behind the flood;
4. the attempt is reserved in the database (:meth:`~..storage.ControlStore.reserve_login`):
   counted as failed *before* the hash, atomically, across every ``--workers`` process, so
   no burst, however concurrent and wherever it lands, gets more than :attr:`LoginThrottle.LIMIT`
   passwords checked a window. A success clears the key's count;
5. the hash; on success a session is opened in the storage (see :mod:`._secrets`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Receive, Scope

from ..._block_index import ipv4_client
from ..._client_ip import TrustedProxies, resolve_client_ip
from ..._request import asgi_peer
from ..storage import ControlStore, Storage
from ._forms import Form, csrf_token, form_endpoint, safe_next
from ._render import render
from ._secrets import PASSWORD_SETTING, new_session, session_hash, verify_password

__all__ = [
    "HASHER",
    "Hasher",
    "LoginThrottle",
    "client_key",
    "login",
    "login_page",
    "logout",
    "trusted_proxies",
]

#: Passwords hashed at once by one process, and attempts waiting for them at most. One
#: thread: a check is ~0.1 s of CPU and a 32 MiB buffer, and the collector's host may have 2
#: cores, one of which ingest keeps; 8 waiting is under a second for a legitimate login queued
#: behind a flood (`bench/bench_login_flood.py`: 150 at once, ingest's slowest reply 0.3 s).
HASH_THREADS: Final = 1
HASH_WAITING: Final = 8
#: How often one process deletes the attempts that left the window (seconds).
PURGE_EVERY: Final = 60.0
FORWARDED: Final = b"x-forwarded-for"


def trusted_proxies(entries: Iterable[str]) -> TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` the login throttle walks (none by default:
    ``TrustedProxies(None)`` would be the SDK's default, loopback). ValueError naming a bad
    entry."""
    return TrustedProxies(list(entries))


def client_key(scope: Scope, receive: Receive, trusted: TrustedProxies) -> str:
    """Whom a login attempt counts against: the connection's address (see the module)."""
    peer, rewritten = asgi_peer(scope, receive)
    forwarded = None
    if trusted.networks or trusted.trusts_unix_socket or rewritten:
        values = [v for k, v in scope.get("headers", ()) if k == FORWARDED]
        forwarded = b",".join(values).decode("latin-1") if values else None
    ip = resolve_client_ip(peer, forwarded, trusted, rewritten=rewritten)
    if ip is None:  # a Unix socket, or a peer that is no address (a test client)
        return "peer:" + (peer or "unix")[:64]
    address = ipaddress.ip_address(ip)
    if address.version == 6:
        client = ipv4_client(int(address))
        if client is not None:  # Teredo, 6to4, NAT64: one IPv4 client's, whatever the /64
            return str(ipaddress.IPv4Address(client))
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return ip


class LoginThrottle:
    """At most :attr:`limit` login attempts a key within :attr:`window` seconds, counted in
    the storage (so in every process) before each password is checked; a success clears the
    key. Keys this process saw locked out are refused without I/O until they may try again
    (at most :attr:`max_cached` of them, the oldest forgotten first)."""

    LIMIT = 10
    WINDOW = 900.0

    def __init__(
        self,
        storage: ControlStore,
        limit: int = LIMIT,
        window: float = WINDOW,
        max_cached: int = 10_000,
    ) -> None:
        self.storage = storage
        self.limit = limit
        self.window = window
        self.max_cached = max_cached
        self._locked: OrderedDict[str, datetime] = OrderedDict()
        self._lock = threading.Lock()
        self._purged: float | None = None

    def known_wait(self, key: str) -> float:
        """Seconds before ``key`` may try again, as far as this process knows (0: ask)."""
        with self._lock:
            until = self._locked.get(key)
            if until is None:
                return 0.0
            left = (until - self.storage.now()).total_seconds()
            if left <= 0:
                del self._locked[key]
                return 0.0
        return max(1.0, left)

    async def reserve(self, key: str) -> float:
        """Count an attempt of ``key``: 0.0, or the seconds before it may try again."""
        wait = await run_in_threadpool(self.storage.reserve_login, key, self.limit, self.window)
        if wait:
            with self._lock:
                self._locked[key] = self.storage.now() + timedelta(seconds=wait)
                self._locked.move_to_end(key)
                while len(self._locked) > self.max_cached:
                    self._locked.popitem(last=False)
        now = time.monotonic()
        if self._purged is None or now - self._purged > PURGE_EVERY:
            self._purged = now
            await run_in_threadpool(self.storage.purge_login_failures, self.window)
        return wait

    async def succeeded(self, key: str) -> None:
        await run_in_threadpool(self.storage.clear_login_failures, key)


class Hasher:
    """Checks passwords on ``threads`` threads of its own, with at most ``waiting`` more
    attempts admitted to wait for them: the ingest API's threads are never taken, and memory
    holds at most ``threads`` hashes."""

    def __init__(self, threads: int = HASH_THREADS, waiting: int = HASH_WAITING) -> None:
        self.threads = threads
        self.waiting = waiting
        self._lock = threading.Lock()
        self._admitted = 0
        self._pool: ThreadPoolExecutor | None = None

    def admit(self) -> Admission | None:
        """A place to check one password, or None when every place is taken."""
        with self._lock:
            if self._admitted >= self.threads + self.waiting:
                return None
            self._admitted += 1
        return Admission(self)

    @property
    def admitted(self) -> int:
        return self._admitted

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    def _submit(self, password: str, stored: str) -> Future[bool]:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sqreen-scrypt")
            return self._pool.submit(verify_password, password, stored)


class Admission:
    """A place in a :class:`Hasher`, held until its password is checked, or until the
    ``with`` block exits without checking one."""

    def __init__(self, hasher: Hasher) -> None:
        self._hasher = hasher
        self._held = True

    async def verify(self, password: str, stored: str) -> bool:
        assert self._held, "one password a place"
        future = self._hasher._submit(password, stored)
        self._held = False  # the place is the hash's now: freed when it is done, even if the
        future.add_done_callback(lambda _: self._hasher._release())  # client goes away
        return await asyncio.wrap_future(future)

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._held:
            self._held = False
            self._hasher._release()


#: The process's hasher: every app of the process shares its threads.
HASHER: Final = Hasher()


def _field(form: Form, name: str) -> str:
    return form.get(name, [""])[0]


def _too_many(wait: float) -> str:
    return f"Too many failed logins: try again in {int(wait // 60) + 1} min."


def _refused(request: Request, context: dict[str, Any], wait: float, why: str) -> Response:
    context["errors"] = [why]
    response = render(request, "login.html", context, status_code=429)
    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


async def login_page(request: Request) -> Response:
    nxt = safe_next(request.query_params.get("next"))
    base = str(request.scope.get("root_path", ""))
    if request.session.get("user") == "admin":
        return RedirectResponse(base + nxt, status_code=303)
    storage: Storage = request.app.state.storage
    configured = await run_in_threadpool(storage.get_setting, PASSWORD_SETTING) is not None
    return render(request, "login.html", {"next": nxt, "configured": configured})


@form_endpoint
async def login(request: Request, form: Form) -> Response:
    state = request.app.state
    storage: Storage = state.storage
    throttle: LoginThrottle = state.throttle
    hasher: Hasher = state.hasher
    key = client_key(request.scope, request.receive, state.trusted_proxies)
    nxt = safe_next(_field(form, "next"))
    context: dict[str, Any] = {"next": nxt, "configured": True}
    wait = throttle.known_wait(key)
    if wait:
        return _refused(request, context, wait, _too_many(wait))
    place = hasher.admit()
    if place is None:
        busy = "The collector is busy checking other logins: try again in a moment."
        return _refused(request, context, 1, busy)
    with place:
        stored = await run_in_threadpool(storage.get_setting, PASSWORD_SETTING)
        if stored is None:
            context["configured"] = False
            return render(request, "login.html", context, status_code=403)
        wait = await throttle.reserve(key)
        if wait:
            return _refused(request, context, wait, _too_many(wait))
        right = await place.verify(_field(form, "password"), stored)
    if not right:
        context["errors"] = ["Wrong password."]
        return render(request, "login.html", context, status_code=401)
    await throttle.succeeded(key)
    token, token_hash = new_session()
    max_age: int = state.max_age
    if not await run_in_threadpool(
        storage.open_session, token_hash, max_age, PASSWORD_SETTING, stored
    ):
        context["errors"] = ["The admin password has just changed: log in with the new one."]
        return render(request, "login.html", context, status_code=401)
    session = request.session
    session.clear()  # a new session: nothing from before the login carries over
    session.update(user="admin", login_at=int(time.time()), sid=token)
    csrf_token(session)
    return RedirectResponse(str(request.scope.get("root_path", "")) + nxt, status_code=303)


@form_endpoint
async def logout(request: Request, form: Form) -> Response:
    """End the session: its row goes, so a copy of the cookie is refused too."""
    token = request.session.get("sid")
    if isinstance(token, str) and token:
        storage: Storage = request.app.state.storage
        await run_in_threadpool(storage.end_session, session_hash(token))
    request.session.clear()
    return RedirectResponse(str(request.scope.get("root_path", "")) + "/login", status_code=303)
