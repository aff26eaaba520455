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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Final

from ._address import Parsed, parse_address
from ._ranges import RangeIndex

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
        self._many: Callable[[list[str]], list[str | None]] | None = None
        #: Each code iptocc answered, checked (a few hundred at most: the data's codes).
        self._checked: dict[object, str | None] = {}
        if self.version is not None:
            from iptocc import country_code

            self._lookup = country_code
            self._many = country_code

    def __call__(self, address: Parsed) -> str | None:
        if self._lookup is None:
            return None
        return _country(self._lookup(address[2]))

    def many(self, texts: list[str]) -> list[str | None]:
        """The country of each of the public addresses ``texts`` (their canonical text), in one
        call to ``iptocc`` (a batch's new addresses: 0.3 -> 0.15 µs an address for the call
        alone, and one check of each code it answers instead of one an address; measured)."""
        lookup = self._many
        if lookup is None:
            return [None] * len(texts)
        codes = lookup(texts)
        checked = self._checked
        try:  # the usual case, codes seen before: a subscript an address, no call
            return [checked[code] for code in codes]
        except (KeyError, TypeError):  # TypeError: a code that is no key (never, but)
            pass
        out: list[str | None] = []
        for code in codes:
            known = _country(code)
            if isinstance(code, str | None) and len(checked) < 1024:
                checked[code] = known
            out.append(known)
        return out

    def describe(self) -> dict[str, Any] | None:
        if self.version is None:
            return None
        return {"package": "iptocc", "version": self.version, "data": "RIR allocations"}


class NetworkKinds:
    """Network kind and provider from ``iporigin``'s range table; absent when not installed.

    The table is read once into a :class:`~._ranges.RangeIndex` per IP version, each range
    labelled with its final answer (``(kind, provider)``, or None for a kind that says
    nothing), rather than asked through ``iporigin.classify``, which parses the text again
    with :mod:`ipaddress` (20 times the cost), or its table's ``find`` (a bisect over all
    ranges: see :mod:`._ranges`). A probe at load checks that the index and ``classify``
    agree; if a later ``iporigin`` changes its table, ``classify`` is used instead.
    """

    PROBES: Final = ("8.8.8.8", "185.220.101.1", "2001:4860:4860::8888", "81.2.69.160")

    def __init__(self) -> None:
        self.version = _version("iporigin")
        self.built: str | None = None
        self._index: dict[int, RangeIndex[tuple[str, str] | None]] | None = None
        self._classify: Callable[[str], Any] | None = None
        if self.version is None:
            return
        # iporigin ships py.typed but no annotations: its modules are read as Any. Its table
        # (``iporigin.core.dataset()``) is not in its ``__all__``, hence the probes below.
        iporigin: Any = importlib.import_module("iporigin")
        core: Any = importlib.import_module("iporigin.core")
        table = core.dataset()  # loaded now, not on the first event
        self.built = datetime.fromtimestamp(int(table.built_at), UTC).date().isoformat()
        try:
            self._index = _indexes(table)
            agree = all(self._check(probe, iporigin.classify(probe)) for probe in self.PROBES)
        except Exception:  # an incompatible table: fall back to the public function
            agree = False
        if not agree:
            logger.warning("sqreen: iporigin %s: using classify() (slower)", self.version)
            self._index = None
            self._classify = iporigin.classify

    def _check(self, probe: str, expected: Any) -> bool:
        address = parse_address(probe)
        assert address is not None
        return self(address) == _answer(expected.provider, expected.kind)

    def __call__(self, address: Parsed) -> tuple[str, str] | None:
        """(kind, provider) of a public address in the table, or None."""
        if self._index is not None:
            return self._index[address[0]].find(address[1])
        if self._classify is not None:
            origin = self._classify(address[2])
            return _answer(origin.provider, origin.kind)
        return None

    def many(self, addresses: Sequence[Parsed]) -> list[tuple[str, str] | None]:
        """What :meth:`__call__` says of each of ``addresses``, in one loop an IP version
        (NetworkKinds.__call__ alone was half of a 1 µs lookup: measured)."""
        index = self._index
        if index is None:
            return [self(address) for address in addresses]
        v4 = index[4].find_many([address[1] for address in addresses if address[0] == 4])
        if len(v4) == len(addresses):
            return v4
        v6 = iter(index[6].find_many([address[1] for address in addresses if address[0] == 6]))
        found4 = iter(v4)
        return [next(found4) if address[0] == 4 else next(v6) for address in addresses]

    def describe(self) -> dict[str, Any] | None:
        if self.version is None:
            return None
        return {"package": "iporigin", "version": self.version, "data": f"built {self.built}"}


def _country(code: object) -> str | None:
    return code if isinstance(code, str) and len(code) == 2 and code.isupper() else None


def _answer(provider: object, kind: object) -> tuple[str, str] | None:
    """What :class:`NetworkKinds` says of a range labelled ``(provider, kind)``."""
    if kind not in KINDS:
        return None
    return str(kind), str(provider)[:MAX_PROVIDER]


def _indexes(table: Any) -> dict[int, RangeIndex[tuple[str, str] | None]]:
    answers = [_answer(provider, kind) for provider, kind in table.labels]
    return {
        4: RangeIndex(table.v4_starts, table.v4_ends, [answers[i] for i in table.v4_labels], 32),
        6: RangeIndex(table.v6_starts, table.v6_ends, [answers[i] for i in table.v6_labels], 128),
    }
