"""The Django example's views: a sign-up, a login and a custom event, tracked with sqreen.

    curl -X POST 127.0.0.1:8002/signup -d username=alice -d password=wonderland
    curl -X POST 127.0.0.1:8002/login -d username=alice -d password=wonderland
    curl -X POST 127.0.0.1:8002/export -H 'X-User: alice' -d report=q3-revenue

(A real app keeps Django's CSRF middleware and its user model; this toy has neither.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

#: username -> password hash. A toy store: use your own user model.
USERS: dict[str, str] = {}


def password_hash(password: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), b"toy-salt", 50_000).hex()


def fields(request: HttpRequest) -> dict[str, Any]:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return request.POST.dict()


@require_GET
def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"app": "sqreen Django example", "routes": ["/signup", "/login", "/export"]}
    )


@require_POST
def signup(request: Any) -> JsonResponse:
    data = fields(request)
    username, password = str(data.get("username", "")), str(data.get("password", ""))
    if not username or not password:
        return JsonResponse({"error": "username and password are required"}, status=400)
    if username in USERS:
        return JsonResponse({"error": "username taken"}, status=409)
    USERS[username] = password_hash(password)
    request.sqreen.signup_track(username=username)  # auth.signup, and identifies alice
    return JsonResponse({"username": username}, status=201)


@require_POST
def login(request: Any) -> JsonResponse:
    data = fields(request)
    username = str(data.get("username", ""))
    known = USERS.get(username, "")
    ok = bool(known) and hmac.compare_digest(known, password_hash(str(data.get("password", ""))))
    # auth.login.success or .failure; a blocked user (or IP) gets a 403 instead.
    request.sqreen.auth_track(ok, username=username)
    if not ok:
        return JsonResponse({"error": "invalid credentials"}, status=401)
    return JsonResponse({"username": username})


@require_POST
def export(request: Any) -> JsonResponse:
    username = request.headers.get("X-User", "")  # a toy: your session says who is logged in
    if username not in USERS:
        return JsonResponse({"error": "log in first"}, status=401)
    request.sqreen.identify({"username": username})
    data = fields(request)
    request.sqreen.track(
        "data.export.requested",
        properties={"format": str(data.get("format", "csv"))},
        target={"id": str(data.get("report", "")), "type": "report"},
    )
    return JsonResponse({"status": "queued"}, status=202)
