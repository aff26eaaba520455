"""The Django test views (see :mod:`tests.integrations.apps.common`)."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

from tests.integrations.apps import common


def handle(request: Any) -> Any:
    return common.handle_of(getattr(request, "sqreen", None))


def echo(request: Any, name: str) -> JsonResponse:
    if request.GET.get("early"):
        handle(request).track("echo.early", properties={"name": name})
    body = request.body
    collect = bool(request.GET.get("collect"))
    handle(request).track("echo", properties={"name": name}, collect_body=collect)
    return JsonResponse(common.digest(body, name))


def form(request: Any) -> JsonResponse:
    fields = request.POST.dict()
    files = {k: len(f.read()) for k, f in request.FILES.items()}
    handle(request).track("form", properties={"fields": len(fields)})
    return JsonResponse({"fields": fields, "files": files})


def identify(request: Any) -> JsonResponse:
    handle(request).identify({"uid": request.GET["uid"]})
    handle(request).track("identified", properties={"marker": request.GET.get("marker", "")})
    if "as" in request.GET:
        handle(request).track("override", user_identifiers={"uid": request.GET["as"]})
    return JsonResponse({"ok": True})


def guarded(request: Any) -> HttpResponse:
    try:
        handle(request).identify({"uid": request.GET["uid"]})
    except Exception:  # a catch-all in the app must not defeat the block
        pass
    except BaseException:  # ?broad=1: nor this one (the middleware refuses at the end)
        if "broad" not in request.GET:
            raise
    handle(request).track("guarded", properties={"marker": request.GET.get("marker", "")})
    return HttpResponse("served")


def count(request: Any) -> JsonResponse:
    return JsonResponse(common.count())


def barrier(request: Any) -> JsonResponse:
    uid = request.GET["uid"]
    handle(request).identify({"uid": uid})
    common.thread_barrier(request.GET["run"], int(request.GET["n"])).wait()
    handle(request).track("isolation", properties={"uid": uid, "run": request.GET["run"]})
    return JsonResponse({"uid": uid})


async def abarrier(request: Any) -> JsonResponse:
    uid = request.GET["uid"]
    handle(request).identify({"uid": uid})
    await common.async_barrier(request.GET["run"], int(request.GET["n"])).wait()
    handle(request).track("isolation", properties={"uid": uid, "run": request.GET["run"]})
    return JsonResponse({"uid": uid})


async def async_view(request: Any, item: int) -> JsonResponse:
    handle(request).identify({"uid": f"async-{item}"})
    handle(request).track("async.view", properties={"item": item})
    return JsonResponse({"item": item})


def stream(request: Any, n: str) -> StreamingHttpResponse:
    """Events tracked by module-level calls while the response streams (sync chunks)."""
    import sqreen

    def chunks() -> Any:
        for i in range(2):
            sqreen.track("streamed", properties={"n": n, "i": i})
            yield f"{n}:{i};".encode()

    return StreamingHttpResponse(chunks())


async def astream(request: Any, n: str) -> StreamingHttpResponse:
    """The same with async chunks, from an async view."""
    import sqreen

    async def chunks() -> Any:
        for i in range(2):
            sqreen.track("streamed", properties={"n": n, "i": i})
            yield f"{n}:{i};".encode()

    return StreamingHttpResponse(chunks())
