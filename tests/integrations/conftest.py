from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import sqreen
import sqreen._context
from tests.receiver import Receiver

from ._sites import SITE_NAMES, Site, make_site

_started: dict[str, Site] = {}


@pytest.fixture(scope="session")
def _sites() -> Iterator[dict[str, Site]]:
    yield _started
    # All at once: each gunicorn lets its worker finish for up to its graceful timeout (the
    # ASGI one took 3.3 s), and one after the other they made the 8-15 s teardown that
    # xdist reports on the last test of a worker (tests/test_wire_time.py).
    with ThreadPoolExecutor(max(len(_started), 1)) as pool:
        list(pool.map(lambda started: started.stop(), _started.values()))


@pytest.fixture(params=SITE_NAMES)
def site(request: pytest.FixtureRequest, _sites: dict[str, Site]) -> Iterator[Site]:
    """Each app behind each way in; servers start once per session, on first use."""
    name = request.param
    found = _sites.get(name)
    if found is None:
        sqreen.init(transport="memory:")  # the apps set themselves up against this one
        receiver = Receiver()
        try:
            found = _sites[name] = make_site(name, receiver)
        except BaseException:
            receiver.stop()
            raise
    if found.in_process:
        found.init_sqreen()
    yield found
    if not found.in_process:
        assert found.internal_errors() == 0, f"the {name} worker logged internal errors"


@pytest.fixture(autouse=True)
def _nothing_left_bound() -> Iterator[None]:
    yield
    # Unbound when each call returns: a response a test never read or closed holds nothing.
    assert sqreen._context.current() is None, "a request context was left bound"
