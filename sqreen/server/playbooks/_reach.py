"""Playbooks that can never fire with the collector's enrichment as started, and settings a
playbook never reads: what ``sqreen serve`` says at start (and ``sqreen playbooks check``),
so that a detection switched off by an option, or an exemption that exempts nothing, is not
mistaken for a quiet site."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from ...events import DERIVED_EVENTS
from ._config import Playbook

__all__ = ["never_firing", "unread_settings"]

#: What the ``--geoip-db`` files can give, as IP intelligence says it
#: (:func:`sqreen.server.intel._mmdb_paths.layout_gives`; not imported: the playbooks'
#: commands do not load the IP data).
PLACES = "places"
ASNS = "asn"
#: ``ip_info`` fields only a ``--geoip-db`` file gives (country, kind, score and provider
#: come from the packages too).
_FROM_FILES_ONLY = frozenset({"asn"})


def never_firing(
    playbooks: Iterable[Playbook],
    *,
    ip_intel: bool,
    geoip: bool,
    travel: bool,
    gives: Collection[str] = (PLACES, ASNS),
) -> list[str]:
    """A line for each playbook that reads what no event will hold: an ``ip.*`` field with
    IP intelligence off, ``ip.asn`` without a ``--geoip-db`` file that gives ASNs, or the
    collector's own ``security.impossible_travel`` with impossible travel off or without a
    file that places logins (``ip_intel``: on; ``geoip``: some file given; ``travel``: its
    speed above 0; ``gives``: what the files given can give, of
    :func:`~..intel.layout_gives`)."""
    travel_off = (
        "--no-ip-intel"
        if not ip_intel
        else "--travel-speed 0"
        if not travel
        else "no --geoip-db: no login has a place"
        if not geoip
        else "no --geoip-db file with coordinates, such as a City file: no login has a place"
        if PLACES not in gives
        else None
    )
    no_asn = not geoip or ASNS not in gives
    out: list[str] = []
    for playbook in playbooks:
        out += unread_settings(playbook)
        fields = [playbook.group_by, playbook.distinct, *(f for f, _ in playbook.where)]
        read = sorted({f"ip.{f.key}" for f in fields if f is not None and f.kind == "ip_info"})
        asn = [field for field in read if field.removeprefix("ip.") in _FROM_FILES_ONLY]
        if read and not ip_intel:
            out.append(
                f"playbook {playbook.id!r} reads {', '.join(read)}, which no event holds with "
                "--no-ip-intel: it never fires"
            )
        elif asn and no_asn:
            out.append(
                f"playbook {playbook.id!r} reads {', '.join(asn)}, which only a --geoip-db file "
                f"with ASNs gives{', and none given has them' if geoip else ''}: it never fires"
            )
        names = {*playbook.events, *(playbook.after.events if playbook.after else ())}
        for derived in sorted(names & DERIVED_EVENTS.keys()) if travel_off else ():
            out.append(
                f"playbook {playbook.id!r} acts on {derived}, which the collector does not "
                f"raise here ({travel_off}): it never fires"
            )
    return out


def unread_settings(playbook: Playbook) -> list[str]:
    """A line for each exemption the playbook never reads: ``exempt_ips`` are read by a
    playbook grouped by ``ip``, ``exempt_users`` by one grouped by a user (what is exempt
    is a group: an address's events are not left out of a user's count, nor a user's of an
    address's)."""
    kind = playbook.group_by.kind
    out = []
    for setting, given, reader in (
        ("exempt_ips", playbook.exempt_ips, "ip"),
        ("exempt_users", playbook.exempt_users, "user"),
    ):
        if given and kind != reader:
            out.append(
                f"playbook {playbook.id!r} has {setting}, which only a playbook grouped by "
                f"{reader} reads (this one is grouped by {playbook.group_by}): they exempt "
                "nothing here"
            )
    return out
