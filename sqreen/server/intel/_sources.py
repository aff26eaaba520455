"""The data shipped in packages: country (``iptocc``) and network kind (``iporigin``).

Both answer from tables inside their wheels, loaded once; neither is ever asked to reach the
network (``iporigin.online``, which would, is never imported).

- ``iptocc`` (MIT OR Apache-2.0): the country each Regional Internet Registry assigned an
  address block to, IPv4 and IPv6, refreshed nightly by its maintainer. That is where a block
  is registered, which is where it is used for ~95 % of IPv4 addresses.
- ``iporigin`` (code MIT; data from the providers' own published feeds, CC0 lists, and two
  repositories without a licence used with their maintainers' permission: see its NOTICE):
  ``hosting``, ``cdn``, ``vpn``, ``tor``, ``bot`` ranges and their provider.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Final

from ._address import Address

__all__ = ["Countries", "NetworkKinds"]

logger = logging.getLogger("sqreen.server")

#: The kinds ``iporigin`` answers that mean something (``unknown`` is absence of evidence).
KINDS: Final = frozenset({"hosting", "cdn", "vpn", "tor", "bot"})
MAX_PROVIDER: Final = 128


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


class Countries:
    """Country codes from ``iptocc``; absent (None for every address) when not installed."""

    def __init__(self) -> None:
        self.version = _version("iptocc")
        self._lookup: Callable[[str], str | None] | None = None
        if self.version is not None:
            from iptocc import country_code

            self._lookup = country_code

    def __call__(self, address: Address) -> str | None:
        if self._lookup is None:
            return None
        code = self._lookup(address.text)
        return code if isinstance(code, str) and len(code) == 2 and code.isupper() else None

    def describe(self) -> dict[str, Any] | None:
        if self.version is None:
            return None
        return {"package": "iptocc", "version": self.version, "data": "RIR allocations"}


class NetworkKinds:
    """Network kind and provider from ``iporigin``'s range table; absent when not installed.

    The table is queried directly (one ``bisect`` on the address's integer) rather than
    through ``iporigin.classify``, which parses the text again with :mod:`ipaddress`: 20 times
    the cost. A probe at load checks that both agree; if a later ``iporigin`` changes its
    table, ``classify`` is used instead.
    """

    PROBE: Final = "8.8.8.8"

    def __init__(self) -> None:
        self.version = _version("iporigin")
        self.built: str | None = None
        self._find: Callable[[int, int], Any] | None = None
        self._classify: Callable[[str], Any] | None = None
        if self.version is None:
            return
        # iporigin ships py.typed but no annotations: its modules are read as Any. Its table
        # (``iporigin.core.dataset()``) is not in its ``__all__``, hence the probe below.
        iporigin: Any = importlib.import_module("iporigin")
        core: Any = importlib.import_module("iporigin.core")
        table = core.dataset()  # loaded now, not on the first event
        self.built = datetime.fromtimestamp(int(table.built_at), UTC).date().isoformat()
        find = getattr(table, "find", None)
        expected = iporigin.classify(self.PROBE)
        try:
            direct = find(int.from_bytes(bytes([8, 8, 8, 8]), "big"), 4) if find else None
        except Exception:  # an incompatible table: fall back to the public function
            direct = None
        if direct is not None and tuple(direct) == (expected.provider, expected.kind):
            self._find = find
        else:
            logger.warning("sqreen: iporigin %s: using classify() (slower)", self.version)
            self._classify = iporigin.classify

    def __call__(self, address: Address) -> tuple[str, str] | None:
        """(kind, provider) of a public address in the table, or None."""
        if self._find is not None:
            found = self._find(address.value, address.version)
            if found is None:
                return None
            provider, kind = found
        elif self._classify is not None:
            origin = self._classify(address.text)
            provider, kind = origin.provider, origin.kind
        else:
            return None
        if kind not in KINDS:
            return None
        return kind, str(provider)[:MAX_PROVIDER]

    def describe(self) -> dict[str, Any] | None:
        if self.version is None:
            return None
        return {"package": "iporigin", "version": self.version, "data": f"built {self.built}"}
