"""The client's user side: identify, logins and sign-ups, and whether a user is blocked.

A mixin of :class:`~sqreen._client.Client`, which provides what is declared below.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn, cast

from ._context import UserScope, current_request
from ._event import InvalidEvent, QueuedEvent, validate_properties, validate_user
from ._input_problems import Call
from ._instrument import note_unbound
from ._ip_syntax import normalize_ip
from ._wire import IDENTIFY

if TYPE_CHECKING:
    from ._blocking import Blocked, Blocklist
    from ._client import Client
    from ._config import Config
    from ._errors import InternalErrors
    from ._queue import Queue
    from ._traits import SentTraits

__all__ = ["SENTINEL_CTX", "Users", "other_user"]

logger = logging.getLogger("sqreen")

#: How its log lines name ``identify()``: no event of that name.
_IDENTIFY_CALL: Final = Call("identify()")
_AUTH_CALL: Final = Call("auth_track()")

#: "The request bound to the running code, whatever it is" (an argument not given).
SENTINEL_CTX: Any = object()
_current_request = current_request.get
_now = time.time


def other_user(ctx: Any) -> None:
    """``track()`` was given ``user_identifiers`` other than those ``identify()`` bound to the
    request: the event goes with track()'s, as documented, but that is often a mistake (an
    identifier spelt two ways), so the agent's warning is logged, once a request. Never
    raised, even in strict mode: nothing was cut or dropped."""
    if not ctx.other_user_noted:
        ctx.other_user_noted = True
        logger.warning(
            "sqreen.identify and sqreen.track have been called with different "
            "user_identifiers values (the event is tracked with track()'s)"
        )


class Users:
    """identify(), auth_track(), signup_track(), for_user(), is_blocked()."""

    __slots__ = ()

    disabled: bool
    config: Config
    errors: InternalErrors
    blocklist: Blocklist
    queue: Queue
    _traits_sent: SentTraits
    _seq: Iterator[int]
    _noted: Callable[[str, list[InvalidEvent]], None]
    _invalid: Callable[[object, InvalidEvent], bool]

    track: Callable[..., bool]  # Client.track

    def identify(
        self,
        user_identifiers: Mapping[str, Any],
        traits: Mapping[str, Any] | None = None,
        ctx: Any = SENTINEL_CTX,
    ) -> None:
        """Bind the user to the request (always, whatever the traits hold), send the traits
        when they changed, and raise :class:`Blocked` if the user is blocked. In strict mode,
        a lossy fix of the identifiers or traits raises after that."""
        self._bind(user_identifiers, traits, ctx, _IDENTIFY_CALL)

    def _bind(
        self,
        user_identifiers: Mapping[str, Any],
        traits: Mapping[str, Any] | None,
        ctx: Any,
        call: Call,
    ) -> None:
        """:meth:`identify`, for ``call`` (what the log names: ``auth_track()`` binds the user
        of a success)."""
        if self.disabled:
            return
        if ctx is SENTINEL_CTX:
            ctx = _current_request()
            if ctx is None:
                note_unbound("identify")
        notes: list[InvalidEvent] = []
        user = None
        with self.errors.guard("identify"):
            user = validate_user(user_identifiers, "user_identifiers", notes)
            if user is not None:
                trait_copy = validate_properties(traits, notes, "traits")[0] if traits else None
                if ctx is not None:
                    ctx.user = user
                    ctx.traits = trait_copy
                if trait_copy:
                    self._send_traits(user, trait_copy)
                if notes and not self.config.strict:
                    self._noted(call, notes)
        if user is None:
            problem = notes[0] if notes else None
            needs = f"{call} needs an identifier" + (
                ""
                if call is _IDENTIFY_CALL
                else " to bind the user (the login is tracked without one)"
            )
            self._invalid(call, problem or InvalidEvent("user_identifiers", "empty", needs))
            return
        blocked = self.blocklist.user_block(user) if ctx is not None else None
        if blocked is not None:
            _refuse(blocked, ctx)
        if notes and self.config.strict:
            raise notes[0]

    def _send_traits(self, user: dict[str, str], traits: dict[str, Any]) -> None:
        """Queue the user's traits (``sq.identify``) unless the same were sent recently."""
        if not self._traits_sent.due(user, traits):
            return
        event = QueuedEvent(next(self._seq), IDENTIFY, _now(), traits, user, None, None, False, 512)
        self.queue.put(event)

    def auth_track(
        self, success: object, user_identifiers: Mapping[str, Any], ctx: Any = SENTINEL_CTX
    ) -> bool:
        """A login attempt; ``success`` by its truth value, as Sqreen's agent took it."""
        with self.errors.guard("auth_track"):
            success = success is True or (success is not False and bool(success))
        name = "auth.login.success" if success else "auth.login.failure"
        accepted = self.track(
            name,
            None,
            self._refusal_mark(user_identifiers, ctx),
            user_identifiers,
            request=ctx,
            warn_other_user=False,
        )
        self._refuse_if_ip_blocked(ctx)
        if success:
            self._bind(user_identifiers, None, ctx, _AUTH_CALL)
        else:
            self.refuse_if_blocked(user_identifiers, ctx)
        return accepted

    def refuse_if_blocked(
        self, user_identifiers: Mapping[str, Any], ctx: Any = SENTINEL_CTX
    ) -> None:
        """Raise :class:`Blocked` when the user is blocked, within a request, without binding
        them (a failed login, a login not yet checked): were only the right password
        refused, the 403 would tell an attacker which one it is."""
        blocked = self._user_blocked_now(user_identifiers, ctx)
        if blocked is not None:
            _refuse(blocked, ctx)

    def _user_blocked_now(self, user_identifiers: Mapping[str, Any], ctx: Any) -> Blocked | None:
        """The block of the user, within a request (None outside one)."""
        if not self.blocklist.has_users or _served(ctx) is None:
            return None
        user = None
        with self.errors.guard("auth_track"):
            user = validate_user(user_identifiers, "user_identifiers", [])
        return self.blocklist.user_block(user) if user else None

    def _ip_blocked_now(self, ctx: Any) -> Blocked | None:
        """The block of the request's client IP now (None outside a request)."""
        if not self.blocklist.has_ips or (served := _served(ctx)) is None:
            return None
        with self.errors.guard("auth_track"):
            return self.blocklist.ip_block(served.client_ip())
        return None

    def _refusal_mark(
        self, user_identifiers: Mapping[str, Any], ctx: Any
    ) -> dict[str, bool] | None:
        """``{"blocked": True}`` when the request will be refused after its event is tracked
        (its client IP or the user blocked now): the event is still its password's verdict
        (the right password was used, from there), but what the app answered was a 403, and
        whoever reads a success should know no session began. None otherwise (the usual
        case, at the cost of a look at empty block lists)."""
        if self._ip_blocked_now(ctx) or self._user_blocked_now(user_identifiers, ctx):
            return {"blocked": True}
        return None

    def _refuse_if_ip_blocked(self, ctx: Any) -> None:
        """Raise :class:`Blocked` when the request's client IP is blocked now: the
        middleware checked it when the request began, and a block made meanwhile (by the
        crossing of a playbook's threshold, from the attacker's own concurrent guesses)
        would otherwise let each request in flight answer its password's verdict: 256
        connections got 263 verdicts from one address blocked at the 5th."""
        blocked = self._ip_blocked_now(ctx)
        if blocked is not None:
            _refuse(blocked, ctx)

    def signup_track(self, user_identifiers: Mapping[str, Any], ctx: Any = SENTINEL_CTX) -> bool:
        accepted = self.track(
            "auth.signup",
            None,
            self._refusal_mark(user_identifiers, ctx),
            user_identifiers,
            request=ctx,
            warn_other_user=False,
        )
        self._refuse_if_ip_blocked(ctx)
        self.identify(user_identifiers, None, ctx)
        return accepted

    def for_user(self, user_identifiers: Mapping[str, Any], ctx: Any = SENTINEL_CTX) -> UserScope:
        return UserScope(cast("Client", self), user_identifiers, ctx)

    def is_blocked(
        self, user_identifiers: Mapping[str, Any] | None = None, ip: str | None = None
    ) -> bool:
        """Whether the user (identifiers) or the IP is blocked; the IP is read like the
        middleware reads a peer (``::ffff:203.0.113.7``, ``203.0.113.7:443``). In strict
        mode, identifiers it cannot read, or an ``ip`` that is not text, raise
        :class:`InvalidEvent` (else: not blocked, as ever; text that is no address is no
        blocked one)."""
        notes: list[InvalidEvent] = []
        user = (
            validate_user(user_identifiers, "user_identifiers", notes) if user_identifiers else None
        )
        address = normalize_ip(ip) if isinstance(ip, str) else None
        if self.config.strict:
            given: object = ip  # typed str | None: what callers pass is another matter
            if given is not None and not isinstance(given, str):
                kind = type(given).__name__
                notes.append(InvalidEvent("ip", "type", f"must be a str, not {kind}"))
            if notes:
                raise notes[0]
        return (
            self.blocklist.user_block(user) is not None
            or self.blocklist.ip_block(address) is not None
        )


def _served(ctx: Any) -> Any:
    """The request ``ctx`` stands for (the current one for the default), or None."""
    return _current_request() if ctx is SENTINEL_CTX else ctx


def _refuse(blocked: Blocked, ctx: Any) -> NoReturn:
    """Raise ``blocked``, kept on the request first (``RequestContext.refused``): a
    middleware that sees the request end without it (caught on its way: an app's
    ``except BaseException``, ``asyncio.gather(return_exceptions=True)``) still refuses it."""
    served = _served(ctx)
    if served is not None and served.bound:
        served.refused = blocked
        served.pin_route()  # its refusal is recorded once the app is done with the request
    raise blocked
