"""FastAPI's suite takes Starlette's injection (``_inject_starlette``), which gives a FastAPI
app ``sqreen.integrations.fastapi.SqreenMiddleware``: loaded with ``-p _inject_fastapi``."""

from __future__ import annotations

from _inject_starlette import pytest_configure, pytest_runtest_teardown, pytest_sessionfinish

__all__ = ["pytest_configure", "pytest_runtest_teardown", "pytest_sessionfinish"]
