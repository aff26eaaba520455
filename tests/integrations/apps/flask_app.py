"""The Flask test app (see :mod:`.common`); ``app`` is what gunicorn serves."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

from sqreen.integrations.flask import Sqreen

from . import common


def create_app(with_sqreen: bool = True) -> Flask:
    app = Flask(__name__)
    if common.UNTRUSTED:
        app.config["SQREEN_TRUSTED_PROXIES"] = []
    if with_sqreen:
        Sqreen(app)

    def handle() -> Any:
        return common.handle_of(getattr(request, "sqreen", None))

    @app.route("/echo/<name>", methods=["GET", "POST", "PUT"])
    def echo(name: str) -> Any:
        if request.args.get("early"):
            handle().track("echo.early", properties={"name": name})
        body = request.get_data(cache=False)
        handle().track(
            "echo", properties={"name": name}, collect_body=bool(request.args.get("collect"))
        )
        return jsonify(common.digest(body, name))

    @app.post("/form")
    def form() -> Any:
        fields = request.form.to_dict()
        files = {k: len(f.read()) for k, f in request.files.items()}
        handle().track("form", properties={"fields": len(fields)})
        return jsonify({"fields": fields, "files": files})

    @app.get("/identify")
    def identify() -> Any:
        handle().identify({"uid": request.args["uid"]})
        handle().track("identified", properties={"marker": request.args.get("marker", "")})
        if "as" in request.args:
            handle().track("override", user_identifiers={"uid": request.args["as"]})
        return jsonify({"ok": True})

    @app.get("/guarded")
    def guarded() -> Any:
        try:
            handle().identify({"uid": request.args["uid"]})
        except Exception:  # a catch-all in the app must not defeat the block
            pass
        except BaseException:  # ?broad=1: nor this one (the middleware refuses at the end)
            if "broad" not in request.args:
                raise
        handle().track("guarded", properties={"marker": request.args.get("marker", "")})
        return "served"

    @app.get("/count")
    def count() -> Any:
        return jsonify(common.count())

    @app.get("/barrier")
    def barrier() -> Any:
        uid = request.args["uid"]
        handle().identify({"uid": uid})
        common.thread_barrier(request.args["run"], int(request.args["n"])).wait()
        handle().track("isolation", properties={"uid": uid, "run": request.args["run"]})
        return jsonify({"uid": uid})

    @app.get("/async/<int:item>")
    async def async_view(item: int) -> Any:
        handle().identify({"uid": f"async-{item}"})
        handle().track("async.view", properties={"item": item})
        return jsonify({"item": item})

    return app


app = create_app()
