from __future__ import annotations

from typing import Any

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.apps import apps
from django.contrib.auth import authenticate, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.decorators import login_required
from django.contrib.auth.middleware import RemoteUserMiddleware
from django.contrib.auth.models import User
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt


@login_required
def private(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"hello {request.user.get_username()}")


_RUNS = {"counted": 0}


@login_required
def counted(request: HttpRequest) -> HttpResponse:
    """``private``, with how many times the view ran (a page served from a cache says an
    earlier count)."""
    _RUNS["counted"] += 1
    return HttpResponse(f"hello {request.user.get_username()} #{_RUNS['counted']}")


def public(request: HttpRequest) -> HttpResponse:
    """A page that reads neither the session nor the user."""
    return HttpResponse("public")


def session_peek(request: HttpRequest) -> HttpResponse:
    """Who is logged in, read from the session without ``request.user``."""
    return HttpResponse(f"user id {request.session.get('_auth_user_id')}")


async def aprivate(request: HttpRequest) -> HttpResponse:
    """An async view reading its user the async way (``request.user`` before Django 5.0)."""
    auser = getattr(request, "auser", None)
    if auser is not None:
        user = await auser()
    else:
        from asgiref.sync import sync_to_async

        user = await sync_to_async(lambda: request.user._wrapped if request.user else None)()
    if not user.is_authenticated:
        return HttpResponse("who?", status=401)
    return HttpResponse(f"hello {user.get_username()}")


@csrf_exempt
def api_login(request: HttpRequest) -> HttpResponse:
    """A login view of the app's own, in the common style: authenticate() without request."""
    user = authenticate(username=request.POST["username"], password=request.POST["password"])
    if user is None:
        return HttpResponse("no", status=401)
    login(request, user)
    return HttpResponse("yes")


@csrf_exempt
async def api_alogin(request: HttpRequest) -> HttpResponse:
    """The async style (Django 5.0+): ``aauthenticate()``, which asks every backend for its
    ``aauthenticate`` (BlockedUsersBackend's too)."""
    from django.contrib.auth import aauthenticate

    user = await aauthenticate(
        request, username=request.POST["username"], password=request.POST["password"]
    )
    return HttpResponse("yes" if user else "no", status=200 if user else 401)


@csrf_exempt
def email_login(request: HttpRequest) -> HttpResponse:
    """A backend of the app's logging in by email (allauth's style): credentials by email."""
    user = authenticate(request, email=request.POST["email"], password=request.POST["password"])
    return HttpResponse("yes" if user else "no", status=200 if user else 401)


@csrf_exempt
def check_password(request: HttpRequest) -> HttpResponse:
    """A password checked, no login (as the admin's form does for a user who is not staff):
    no signal when it is right."""
    user = authenticate(
        request, username=request.POST["username"], password=request.POST["password"]
    )
    return HttpResponse("right" if user else "wrong", status=200 if user else 401)


class EmailOrUsername(ModelBackend):
    """The usual backend of a site logging in by username or e-mail (``SQREEN_TEST_EMAIL_LOGIN``
    in the settings): one account, two spellings."""

    def authenticate(
        self, request: Any, username: Any = None, password: Any = None, **kwargs: Any
    ) -> Any:
        if username is None or password is None:
            return None
        found = User.objects.filter(Q(username=username) | Q(email__iexact=username)).first()
        if found is None or not found.check_password(password):
            return None
        return found if self.user_can_authenticate(found) else None

    async def aauthenticate(
        self, request: Any, username: Any = None, password: Any = None, **kwargs: Any
    ) -> Any:
        return await sync_to_async(self.authenticate)(request, username, password, **kwargs)


class HeaderRemoteUser(RemoteUserMiddleware):
    """Logs in the user a proxy names in ``X-Remote-User`` (out, without it), after
    ``AuthenticationMiddleware``: ``request.user`` changed after the session's read.
    (Django 5.2 reads ``META[header]`` in its sync path, ``META["HTTP_" + header]`` in its
    async one: the name is given under both.)"""

    def process_request(self, request: HttpRequest) -> None:
        _named(request)
        super().process_request(request)

    async def aprocess_request(self, request: HttpRequest) -> None:
        _named(request)
        await super().aprocess_request(request)


def _named(request: HttpRequest) -> None:
    name = request.META.get("HTTP_X_REMOTE_USER")
    if name is not None:
        request.META[RemoteUserMiddleware.header] = name
        request.META["HTTP_" + RemoteUserMiddleware.header] = name


def before_auser(get_response: Any) -> Any:
    """A middleware making the request as Django before 5.0 made it: no ``auser()``."""

    async def middleware(request: HttpRequest) -> Any:
        request.__dict__.pop("auser", None)
        return await get_response(request)

    return markcoroutinefunction(middleware)


before_auser.async_capable = True  # type: ignore[attr-defined]
before_auser.sync_capable = False  # type: ignore[attr-defined]


@csrf_exempt
def api_login_tracked_too(request: HttpRequest) -> HttpResponse:
    """What the README warns against: the signals track the login, and the view too."""
    username = request.POST["username"]
    user = authenticate(request, username=username, password=request.POST["password"])
    request.sqreen.auth_track(user is not None, username=username)  # type: ignore[attr-defined]
    return HttpResponse("yes" if user else "no", status=200 if user else 401)


def swallowing(request: HttpRequest) -> HttpResponse:
    """A view that catches everything, ``sqreen.Blocked`` of ``identify()`` too."""
    try:
        request.sqreen.identify({"username": request.GET["user"]})  # type: ignore[attr-defined]
    except BaseException:
        return HttpResponse("swallowed")
    return HttpResponse("served")


urlpatterns = [
    path("swallowing/", swallowing),
    path("api/check", check_password),
    path("api/login-tracked-too", api_login_tracked_too),
    path("api/login", api_login),
    path("api/alogin", api_alogin),
    path("api/email-login", email_login),
    path("accounts/login/", auth_views.LoginView.as_view()),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="/accounts/login/")),
    path("private/", private),
    path("counted/", counted),
    path("aprivate/", aprivate),
    path("public/", public),
    path("session/", session_peek),
]
if apps.is_installed("rest_framework"):  # SQREEN_TEST_DRF (see the settings)
    urlpatterns.append(path("drf/", include("tests.integrations.apps.django_auth_site.api")))
