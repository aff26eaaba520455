"""The explorer's two secrets: the admin password (stored hashed) and the session key.

The password is hashed with scrypt (standard library) and a random salt, in the storage's
settings as ``scrypt$<log2 n>$<r>$<p>$<salt>$<hash>`` (base64), so that changing the cost later
leaves old hashes readable. It is compared in constant time. There is no default password: with
none set, nobody can log in (an open admin page is worse than a locked one).

The session key signs the session cookie. It comes from ``SQREEN_SECRET_KEY`` or is generated
once and kept in the settings, so that a restart does not log everyone out and several
collector processes on one PostgreSQL database accept each other's cookies.

A session is a random token in the (signed) cookie, valid while the storage holds its SHA-256
(:func:`new_session`): logging out deletes it, so a copy of the cookie is refused too, and
setting a new password deletes them all in the same transaction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from typing import Final

from ..storage import ControlStore

__all__ = [
    "PASSWORD_SETTING",
    "SECRET_SETTING",
    "hash_password",
    "new_session",
    "session_hash",
    "session_secret",
    "set_admin_password",
    "verify_password",
]

PASSWORD_SETTING: Final = "explorer.admin_password"
SECRET_SETTING: Final = "explorer.session_secret"
MIN_PASSWORD: Final = 8
MAX_PASSWORD: Final = 1024
#: scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB and ~0.1 s per attempt on one core.
LOG2_N: Final = 15
R: Final = 8
P: Final = 1
_MAXMEM: Final = 128 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=2**log2_n,
        r=r,
        p=p,
        maxmem=_MAXMEM,
        dklen=32,
    )


def check_new_password(password: str) -> str:
    """``password`` if it is acceptable as the admin password; ValueError saying why not."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the admin password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"the admin password must be at most {MAX_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, LOG2_N, R, P)
    return f"scrypt${LOG2_N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches the ``stored`` hash (False when none is stored)."""
    if not stored or len(password) > MAX_PASSWORD:
        return False
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        params = int(log2_n), int(r), int(p)
        if scheme != "scrypt" or not (10 <= params[0] <= 20 and 1 <= params[1] <= 32):
            return False
        if not 1 <= params[2] <= 4:
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), *params)
    except ValueError:  # a malformed stored hash matches nothing
        return False
    return hmac.compare_digest(actual, expected)


def set_admin_password(storage: ControlStore, password: str) -> None:
    """Hash and store the admin password (ValueError when it is too short or too long), and
    end every session of the explorer, in one transaction."""
    stored = hash_password(check_new_password(password))
    storage.set_setting_ending_sessions(PASSWORD_SETTING, stored)


def apply_env_password(storage: ControlStore) -> bool:
    """Set the password from ``SQREEN_ADMIN_PASSWORD`` unless it is already the stored one
    (re-hashing on every start would end every session); return whether it was set."""
    password = os.environ.get("SQREEN_ADMIN_PASSWORD")
    if not password or verify_password(password, storage.get_setting(PASSWORD_SETTING)):
        return False
    set_admin_password(storage, password)
    return True


def session_secret(storage: ControlStore) -> str:
    """``SQREEN_SECRET_KEY``, else the key kept in the settings (created the first time)."""
    from_env = os.environ.get("SQREEN_SECRET_KEY")
    if from_env:
        if len(from_env) < 32:
            raise ValueError("SQREEN_SECRET_KEY must be at least 32 characters")
        return from_env
    return storage.add_setting(SECRET_SETTING, secrets.token_urlsafe(32))


def new_session() -> tuple[str, str]:
    """A new session's token (for the cookie) and what the storage keeps of it."""
    token = secrets.token_urlsafe(32)
    return token, session_hash(token)


def session_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
