"""Playbooks that can never fire with the collector's enrichment as started, and settings a
playbook never reads: what ``sqreen serve`` says at start (and ``sqreen playbooks check``),
so that a detection switched off by an option, or an exemption that exempts nothing, is not
mistaken for a quiet site."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from difflib import get_close_matches

from ...events import DERIVED_EVENTS, STANDARD_EVENTS
from ._config import Playbook
from ._late import span_of

__all__ = ["name_warnings", "never_firing", "shadowed", "unread_settings"]

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
    playbooks = list(playbooks)
    out: list[str] = shadowed(playbooks)
    for playbook in playbooks:
        out += unread_settings(playbook) + name_warnings(playbook)
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


def shadowed(playbooks: Sequence[Playbook]) -> list[str]:
    """A line for each playbook grouped by ``ip`` that another one's blocks keep under its
    threshold. A playbook blocking an address at ``t`` of the events it counts in a window
    ``w``, for at least the other's window ``W``, lets an address make at most
    ``(t - 1) * ceil(W / w) + 1`` of them in ``W``: a threshold above that is never reached
    but by addresses it does not block (private ones, its exemptions) or events on their way
    when the block lands. A blocker whose ``cooldown`` outlasts its block is no bound: once
    the block ends it stays quiet for that address, which then makes as many as it likes.
    (The templates' credential stuffing, 15 accounts in 15 minutes, was so under brute
    force's 5 failures in 5 minutes: at most 13.)"""
    out = []
    for counted in playbooks:
        if counted.group_by.kind != "ip" or counted.after is not None:
            continue
        for blocker in playbooks:
            if (
                blocker is counted
                or not blocker.blocks
                or blocker.action != "block_ip"
                or blocker.group_by != counted.group_by
                or blocker.where
                or blocker.after is not None
                or blocker.distinct is not None
                or blocker.duration is None
                or blocker.duration < counted.window
                # quiet longer than its block: an address goes on freely once it ends
                or (blocker.cooldown is not None and blocker.cooldown > blocker.duration)
                or not set(counted.events) <= set(blocker.events)
            ):
                continue
            most = (blocker.threshold - 1) * math.ceil(counted.window / blocker.window) + 1
            if counted.threshold > most:
                out.append(
                    f"playbook {counted.id!r} can fire only where {blocker.id!r} does not block: "
                    f"{blocker.id!r} blocks an address at {blocker.threshold} of its events in "
                    f"{span_of(blocker.window)} for {span_of(blocker.duration)}, so an address "
                    f"makes at most {most} in the {span_of(counted.window)} window of "
                    f"{counted.id!r}, under its threshold of {counted.threshold}"
                )
                break
    return out


def name_warnings(p: Playbook) -> list[str]:
    """What to say of an event name close to a standard one but not it (a typo: the
    playbook would read events nobody sends). An app's own names are fine."""
    out = []
    for name in sorted(p.watched - STANDARD_EVENTS.keys()):
        close = get_close_matches(name, STANDARD_EVENTS, n=1, cutoff=0.85)
        if close:
            out.append(
                f"{p.id} reads {name!r}, which is not a standard event name: did you mean "
                f"{close[0]!r}? (an app's own event names are fine; this one fires only if "
                "the app tracks it)"
            )
    return out
