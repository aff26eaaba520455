"""Playbooks that can never fire with the collector's enrichment as started: what
``sqreen serve`` says at start, so that a detection switched off by an option is not
mistaken for a quiet site."""

from __future__ import annotations

from collections.abc import Iterable

from ...events import DERIVED_EVENTS
from ._config import Playbook

__all__ = ["never_firing"]

#: ``ip_info`` fields only a ``--geoip-db`` file gives (country, kind, score and provider
#: come from the packages too).
_FROM_FILES_ONLY = frozenset({"asn"})


def never_firing(
    playbooks: Iterable[Playbook], *, ip_intel: bool, geoip: bool, travel: bool
) -> list[str]:
    """A line for each playbook that reads what no event will hold: an ``ip.*`` field with
    IP intelligence off, ``ip.asn`` without a ``--geoip-db`` file, or the collector's own
    ``security.impossible_travel`` with impossible travel off (``ip_intel``: on; ``geoip``:
    some file given; ``travel``: its speed above 0)."""
    travel_off = (
        "--no-ip-intel"
        if not ip_intel
        else "--travel-speed 0"
        if not travel
        else "no --geoip-db: no login has a place"
        if not geoip
        else None
    )
    out: list[str] = []
    for playbook in playbooks:
        fields = [playbook.group_by, playbook.distinct, *(f for f, _ in playbook.where)]
        read = sorted({f"ip.{f.key}" for f in fields if f is not None and f.kind == "ip_info"})
        asn = [field for field in read if field.removeprefix("ip.") in _FROM_FILES_ONLY]
        if read and not ip_intel:
            out.append(
                f"playbook {playbook.id!r} reads {', '.join(read)}, which no event holds with "
                "--no-ip-intel: it never fires"
            )
        elif asn and not geoip:
            out.append(
                f"playbook {playbook.id!r} reads {', '.join(asn)}, which only a --geoip-db file "
                "with ASNs gives: it never fires"
            )
        names = {*playbook.events, *(playbook.after.events if playbook.after else ())}
        for derived in sorted(names & DERIVED_EVENTS.keys()) if travel_off else ():
            out.append(
                f"playbook {playbook.id!r} acts on {derived}, which the collector does not "
                f"raise here ({travel_off}): it never fires"
            )
    return out
