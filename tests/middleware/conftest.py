from __future__ import annotations

from collections.abc import Iterator

import pytest

from sqreen._context import current


@pytest.fixture(autouse=True)
def _nothing_left_bound() -> Iterator[None]:
    yield
    assert current() is None, "a request context was left bound"
