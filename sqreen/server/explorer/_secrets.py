"""The explorer's two secrets: the admin password (stored hashed) and the session key.

The password is hashed with scrypt (standard library) and a random salt, in the storage's
settings as ``scrypt$<log2 n>$<r>$<p>$<salt>$<hash>`` (base64), so that changing the cost later
leaves old hashes readable. It is compared in constant time. There is no default password: with
none set, nobody can log in (an open admin page is worse than a locked one).

The session key signs the session cookie. It comes from ``SQREEN_SECRET_KEY`` or is generated
once and kept in the settings, so that a restart does not log everyone out and several
collector processes on one PostgreSQL database accept each other's cookies.

A session remembers a *password version* (an HMAC of the stored hash under the session key):
setting a new password therefore ends every session opened with the old one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from typing import Final

from ..storage import ControlStore

__all__ = [
    "PASSWORD_SETTING",
    "SECRET_SETTING",
    "PasswordCache",
    "hash_password",
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
    """Hash and store the admin password (ValueError when it is too short or too long)."""
    storage.set_setting(PASSWORD_SETTING, hash_password(check_new_password(password)))


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


def password_version(secret: str, stored: str | None) -> str:
    """What a session remembers of the password it was opened with."""
    key = secret.encode("utf-8", "surrogatepass")
    mac = hmac.new(key, (stored or "").encode("ascii", "replace"), hashlib.sha256)
    return mac.hexdigest()[:24]


class PasswordCache:
    """The current password version, re-read from storage at most every ``ttl`` seconds, so
    a password set from the CLI (another process) ends old sessions within that time."""

    def __init__(self, storage: ControlStore, secret: str, ttl: float = 2.0) -> None:
        self.storage = storage
        self.secret = secret
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: tuple[str | None, float] | None = None

    def cached(self) -> tuple[str | None, bool]:
        """(stored hash, fresh) without I/O; call :meth:`load` when not fresh."""
        with self._lock:
            value = self._value
        if value is None:
            return None, False
        return value[0], value[1] > time.monotonic()

    def load(self) -> str | None:
        stored = self.storage.get_setting(PASSWORD_SETTING)
        with self._lock:
            self._value = (stored, time.monotonic() + self.ttl)
        return stored

    def forget(self) -> None:
        with self._lock:
            self._value = None
