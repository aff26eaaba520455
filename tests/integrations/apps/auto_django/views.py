"""Views that call the module functions only, as code written for Sqreen's agent did."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.http import HttpResponse, JsonResponse

import sqreen

PASSWORDS = {"alice": "wonderland"}


def login(request: Any) -> HttpResponse:
    username = request.POST["username"]
    ok = PASSWORDS.get(username) == request.POST["password"]
    sqreen.auth_track(ok, username=username)
    sqreen.track("login.form", properties={"ok": ok})
    return HttpResponse(
        "welcome" if ok else "wrong username or password", status=200 if ok else 401
    )


def identify(request: Any) -> JsonResponse:
    sqreen.identify({"uid": request.GET["uid"]})
    sqreen.track("identified", properties={"marker": request.GET.get("marker", "")})
    return JsonResponse({"ok": True})


def layers(request: Any) -> JsonResponse:
    return JsonResponse({"middleware": list(settings.MIDDLEWARE), "pid": os.getpid()})
