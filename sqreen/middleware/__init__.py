"""Framework-free middlewares: :mod:`sqreen.middleware.wsgi` and :mod:`sqreen.middleware.asgi`.

Framework integrations (:mod:`sqreen.integrations`) build on these; they never import Flask,
Django or FastAPI.
"""
