"""FastAPI integration: the middleware, and the handle as a dependency.

::

    from fastapi import FastAPI
    from sqreen.integrations.fastapi import Sqreen, SqreenMiddleware

    app = FastAPI()
    app.add_middleware(SqreenMiddleware)        # options as keywords, else SQREEN_* env

    @app.post("/login")
    def login(form: LoginForm, sqreen: Sqreen):  # or request.state.sqreen
        sqreen.auth_track(check(form), username=form.username)

``Sqreen`` is ``Annotated[SqreenHandle, Depends(sqreen_handle)]``; spell it
``handle: SqreenHandle = Depends(sqreen_handle)`` if you prefer. Events carry the route
template FastAPI matched (``/items/{item_id}``, with the prefixes its routers were included
and mounted under); its path parameters are read to scrub the path (a ``{token}`` segment
is redacted), not sent apart. Sync endpoints run in
the thread pool with a copy of the request's context, and background tasks run before the
middleware returns: both see the user ``identify()`` bound, since the handle is one object.
In a websocket endpoint the dependency gives the handshake's handle: events carry the
client's address, user agent and path, and a blocked user's ``auth_track()`` refuses the
connection (its handshake, or a close with 1008 once accepted).

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

try:
    from fastapi import Depends
except ImportError as exc:  # pragma: no cover - exercised without FastAPI installed
    raise ImportError(
        "sqreen.integrations.fastapi needs FastAPI: install with pip install 'sqreen-sdk[fastapi]'"
    ) from exc

from . import starlette as _starlette
from .starlette import SqreenHandle, sqreen_handle

__all__ = ["Sqreen", "SqreenHandle", "SqreenMiddleware", "sqreen_handle"]


class SqreenMiddleware(_starlette.SqreenMiddleware):
    """The ASGI middleware; keywords are :func:`sqreen.init` options."""

    framework = "fastapi"


class _Handle(SqreenHandle):
    """The handle's type as :data:`Sqreen` names it: called (``Sqreen(app)``, as Flask's
    integration is set up), it says how FastAPI's is."""

    __slots__ = ()

    def __new__(cls, *args: object, **kwargs: object) -> _Handle:
        raise TypeError(
            "sqreen.integrations.fastapi.Sqreen is the request's handle, as a parameter "
            "(def view(sqreen: Sqreen)); to set the integration up: "
            "app.add_middleware(SqreenMiddleware)"
        )


#: Declare it as a parameter to get the request's handle: ``def view(sqreen: Sqreen)``.
#: (Type checkers see the handle's own type, which ``sqreen_handle`` returns.)
if TYPE_CHECKING:
    Sqreen = Annotated[SqreenHandle, Depends(sqreen_handle)]
else:
    Sqreen = Annotated[_Handle, Depends(sqreen_handle)]
