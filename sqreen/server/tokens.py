"""API key tokens: made and hashed without the web stack, so that ``sqreen keys create``
does not import Starlette (:mod:`.auth` checks them on requests)."""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

__all__ = ["TOKEN_PREFIX", "hash_token", "new_token"]

TOKEN_PREFIX: Final = "sqk_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
