"""API keys: long random bearer tokens, stored only as SHA-256, checked in constant time.

A token is shown once, when created; the database keeps its SHA-256 (a fast hash is right for
256 random bits: there is nothing to brute-force). A presented token is hashed, looked up by
hash and compared with :func:`hmac.compare_digest`. Valid keys are cached in memory for
:data:`CACHE_TTL` seconds so that ingest does not read the key table on every batch; a key
revoked from the CLI (another process) therefore stops working within that time.
"""

from __future__ import annotations

import hmac
import threading
import time
from typing import Final, NamedTuple

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from .errors import ApiError
from .storage import ApiKey, ControlStore
from .tokens import TOKEN_PREFIX, hash_token, new_token

__all__ = ["TOKEN_PREFIX", "KeyChecker", "authenticate", "hash_token", "new_token"]

CACHE_TTL: Final = 2.0
MAX_TOKEN_CHARS: Final = 256
MAX_CACHED: Final = 1024


def _unauthorized(message: str, error: str | None = None) -> ApiError:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return ApiError(401, message, headers={"WWW-Authenticate": challenge})


class _Cached(NamedTuple):
    key: ApiKey
    until: float  # time.monotonic()


class KeyChecker:
    """Authenticates ``Authorization: Bearer`` headers against the key table (blocking)."""

    def __init__(self, storage: ControlStore, ttl: float = CACHE_TTL) -> None:
        self.storage = storage
        self.ttl = ttl
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def cached(self, authorization: str | None) -> ApiKey | None:
        """The key for this header if it was found valid less than ``ttl`` ago (no I/O)."""
        token = self._token(authorization)
        with self._lock:
            hit = self._cache.get(hash_token(token))
        return hit.key if hit and hit.until > time.monotonic() else None

    def check(self, authorization: str | None) -> ApiKey:
        """The active key for this header; raise a 401 :class:`ApiError` otherwise."""
        digest = hash_token(self._token(authorization))
        with self._lock:
            hit = self._cache.get(digest)
        if hit and hit.until > time.monotonic():
            return hit.key
        found = self.storage.key_by_hash(digest)
        if found is None or not hmac.compare_digest(found.token_hash, digest):
            raise _unauthorized("invalid or revoked API key", "invalid_token")
        with self._lock:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[digest] = _Cached(found.key, time.monotonic() + self.ttl)
        return found.key

    @staticmethod
    def _token(authorization: str | None) -> str:
        if not authorization:
            raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized(
                "the Authorization header must be 'Bearer <key>'", "invalid_request"
            )
        if len(token) > MAX_TOKEN_CHARS:
            raise _unauthorized("invalid or revoked API key", "invalid_token")
        return token


async def authenticate(request: Request, *, admin: bool = False) -> ApiKey:
    """The API key of this request, or a 401; with ``admin``, a 403 for an ingest key."""
    checker: KeyChecker = request.app.state.keys
    header = request.headers.get("authorization")
    key = checker.cached(header)
    if key is None:
        key = await run_in_threadpool(checker.check, header)
    if admin and key.scope != "admin":
        raise ApiError(
            403,
            f"key #{key.id} may send events only: this needs a key made with "
            "`sqreen keys create --scope admin`",
            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
        )
    return key
