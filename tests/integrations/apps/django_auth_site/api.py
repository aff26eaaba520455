"""Django REST framework views of the site: token and basic authentication, each way of
listing :class:`sqreen.integrations.drf.NotBlocked` (the default permissions, a view's own
list, a composition, ``@api_view``)."""

from __future__ import annotations

from typing import Any

from django.urls import path
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

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


class Unchecked(APIView):
    """What ``sqreen.W003`` names: its own permissions, without ``NotBlocked``."""

    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({})


urlpatterns: list[Any] = [
    path("me", Me.as_view()),
    path("export", Export.as_view()),
    path("whoami", whoami),
]
#: ``ROOT_URLCONF`` of the check's test: the views above and one without the check.
unchecked = [*urlpatterns, path("unchecked", Unchecked.as_view())]
