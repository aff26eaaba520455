"""``tests.servers.django_sync_chain:application``: a Django ASGI app whose middleware chain
runs sync: a sync-only middleware after sqreen's makes Django run ours on a thread of
asgiref's, not in the event loop. Its views answer as :mod:`tests.servers.apps`' do."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path


def track(request: HttpRequest) -> JsonResponse:
    request.sqreen.track("server.event", properties={"n": int(request.GET.get("n", "0"))})  # type: ignore[attr-defined]
    return JsonResponse({"pid": os.getpid(), "peer": request.META.get("REMOTE_ADDR")})


def ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid(), "peer": request.META.get("REMOTE_ADDR")})


class SyncOnly:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)


urlpatterns = [path("track", track), path("ping", ping)]

if not settings.configured:
    settings.configure(
        SECRET_KEY="tests-servers-not-secret",
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "sqreen.integrations.django.SqreenMiddleware",
            f"{__name__}.SyncOnly",
        ],
        INSTALLED_APPS=["sqreen.integrations.django"],
        DATABASES={},
        USE_TZ=True,
    )

from django.core.asgi import get_asgi_application  # noqa: E402  (settings first)

application = get_asgi_application()
