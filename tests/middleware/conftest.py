from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sqreen._context import current


@pytest.fixture(autouse=True)
def _nothing_left_bound() -> Iterator[None]:
    yield
    # A response a test dropped without reading or closing it is released when collected.
    gc.collect()
    assert current() is None, "a request context was left bound"
