"""Django REST framework views of the site: token and basic authentication, each way of
listing :class:`sqreen.integrations.drf.NotBlocked` (the default permissions, a view's own
list, a composition, ``@api_view``)."""

from __future__ import annotations

from typing import Any

from django.urls import include, path
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.views import APIView
from rest_framework.viewsets import ViewSet

from sqreen.integrations.drf import NotBlocked


class Me(APIView):
    """The default permissions (the settings' ``NotBlocked``, ``IsAuthenticated``)."""

    def get(self, request: Request) -> Response:
        request.sqreen.track("api.me.read", properties={"via": "default"})
        return Response({"username": request.user.get_username()})


class Export(APIView):
    """A view's own permissions, composed."""

    permission_classes = [NotBlocked & IsAuthenticated]

    def post(self, request: Request) -> Response:
        request.sqreen.track("data.export.requested")
        return Response({"queued": True})


@api_view(["GET"])
@permission_classes([IsAuthenticated, NotBlocked])
def whoami(request: Request) -> Response:
    return Response({"username": request.user.get_username()})


class Gathered(NotBlocked):
    """Its permissions run as adrf's async ``&`` runs them: each one's answer gathered, an
    exception raised taken as an answer (``asyncio.gather(return_exceptions=True)``), and
    only an ``Exception`` raised again: a ``sqreen.Blocked`` raised would read as a pass."""

    def has_permission(self, request: Request, view: Any) -> bool:
        answers: list[Any] = []
        for check in (super().has_permission, IsAuthenticated().has_permission):
            try:
                answers.append(check(request, view))
            except BaseException as exc:
                answers.append(exc)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return all(answers)


class Gather(APIView):
    permission_classes = [Gathered]

    def post(self, request: Request) -> Response:
        request.sqreen.track("data.export.requested", properties={"via": "gathered"})
        return Response({"queued": True})


class Posts(ViewSet):
    """A router's viewset: the default permissions, but an ``@action`` of its own."""

    def list(self, request: Request) -> Response:
        return Response([])

    @action(detail=False, permission_classes=[IsAuthenticated])
    def mine(self, request: Request) -> Response:
        return Response([])


urlpatterns: list[Any] = [
    path("me", Me.as_view()),
    path("export", Export.as_view()),
    path("whoami", whoami),
    path("gathered", Gather.as_view()),
]


# What the check's test serves (its ROOT_URLCONF): the views above and each way to leave
# NotBlocked out, or to choose the permissions in code.
class Unchecked(APIView):
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({})


class Either(Unchecked):
    permission_classes = [IsAuthenticated | NotBlocked]


class Chosen(APIView):
    def get_permissions(self) -> list[Any]:
        return [IsAuthenticated()]


class Anonymous(APIView):
    """No authentication: no user to check."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]


@api_view(["GET"])
@permission_classes([AllowAny])
def public(request: Request) -> Response:
    return Response({})


router = DefaultRouter()  # with format-suffix routes, and its API root
router.register("posts", Posts, basename="posts")
unchecked = [
    path("api/", include(urlpatterns)),
    path("api/", include(router.urls)),
    path("unchecked", Unchecked.as_view()),
    path("either", Either.as_view()),
    path("open", Me.as_view(permission_classes=[AllowAny])),
    path("chosen", Chosen.as_view()),
    path("anonymous", Anonymous.as_view()),
    path("public", public),
    path("token", ObtainAuthToken.as_view()),
]
