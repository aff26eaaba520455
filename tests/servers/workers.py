"""gunicorn's ``UvicornWorker`` without the lifespan, which gunicorn has no option to turn off
(``-k tests.servers.workers.NoLifespanWorker``)."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():  # "uvicorn.workers is deprecated": it still ships, and is used
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker


class NoLifespanWorker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "lifespan": "off"}
