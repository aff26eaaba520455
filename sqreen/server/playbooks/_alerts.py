"""A playbook's firing as an alert, with the block it asks for (:func:`new_alert`), and a
backtest's firings as alerts (:func:`alerts_for`)."""

from __future__ import annotations

import ipaddress
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from ..._text import visible
from ...events import SECURITY_IMPOSSIBLE_TRAVEL
from ..blocks import InvalidBlock, ip_block, user_block
from ..storage import Alert, BlockSpec, NewAlert, StoredEvent
from ..storage.model import from_us
from ._config import Playbook
from ._fields import internal_group, ip_group, user_key
from ._hits import Firing
from ._streams import US

__all__ = [
    "MOST_LISTED",
    "MOST_USER_BYTES",
    "PRIVATE_SPARED",
    "alerts_for",
    "behind",
    "new_alert",
    "retry_us",
]

logger = logging.getLogger("sqreen.server")


def new_alert(
    firing: Firing,
    max_blocks: int | None = None,
    spell: Callable[[Playbook, str], Mapping[str, str] | None] | None = None,
) -> NewAlert | None:
    """The alert of a firing, with the block its playbook asks for (at most ``max_blocks``
    in force: see :class:`~..storage.BlockSpec`); ``spell`` gives a user key's identifiers
    as an event spelled them."""
    p = firing.playbook
    what = "/".join(p.after.events if p.after else p.events)
    counted = "distinct " + str(p.distinct) + " with " if p.distinct else ""
    if firing.trigger is not None:  # a success after failures: the success fired it
        counted = f"{firing.trigger} after {counted}"
    summary = (
        f"{p.id}: {counted}{firing.total} {what} in {_span(p.window.total_seconds())} "
        f"for {p.group_by}={firing.key}"
    )[:1000]
    blocks = p.blocks
    if blocks and p.action == "block_ip" and not p.block_private:
        if internal_group(firing.key):
            blocks = False
            summary = (summary[:700] + PRIVATE_SPARED)[:1000]
    block = _block(p, firing.key, summary, max_blocks, spell) if blocks else None
    return NewAlert(
        playbook=p.id,
        group_by=str(p.group_by),
        group_key=firing.key,
        total=firing.total,
        first_at=from_us(firing.first_us),
        last_at=from_us(firing.last_us),
        first_seq=firing.first_seq,
        last_seq=firing.last_seq,
        seqs=firing.seqs,
        mode=p.mode,
        action=p.action,
        summary=summary,
        block=block,
        retry_us=retry_us(p),
    )


#: What an alert on a private address says of the block it did not make.
PRIVATE_SPARED: Final = (
    "; not blocked: a private address, most often a proxy the SDKs do not trust "
    "(trusted_proxies), which every client would share; block_private = true blocks it"
)


def _block(
    p: Playbook,
    key: str,
    reason: str,
    max_blocks: int | None,
    spell: Callable[[Playbook, str], Mapping[str, str] | None] | None = None,
) -> BlockSpec | None:
    # The reason names the key an event sent: a block's reason is one line, shown as is.
    reason = visible(reason)
    try:
        if p.action == "block_ip":
            if not _one_group(key, p.group_by.ipv6_prefix):
                raise ValueError("not an address, nor the IPv6 network the playbook groups by")
            request = ip_block(key, duration=p.duration, reason=reason[:512])
        else:
            user = json.loads(key) if p.group_by.key is None else {p.group_by.key: key}
            try:
                request = user_block(user, duration=p.duration, reason=reason[:512])
            except InvalidBlock:
                # Folded, an identifier may be longer than any an event holds (NFKC makes 18
                # characters of U+FDFA): the block names the user as an event spelled them,
                # which every SDK folds as it folds the app's.
                spelled = spell(p, key) if spell is not None else None
                if spelled is None:
                    raise
                request = user_block(spelled, duration=p.duration, reason=reason[:512])
    except (InvalidBlock, ValueError) as exc:
        logger.warning("sqreen: playbook %s: no block for %s: %s", p.id, visible(key[:100]), exc)
        return None
    return BlockSpec(
        type=request.type,
        user=request.user,
        ip=request.ip,
        duration=request.duration,
        reason=request.reason,
        created_by=f"playbook:{p.id}",
        max_active=max_blocks,
    )


def _one_group(key: str, ipv6_prefix: int | None) -> bool:
    """Whether ``key`` is a group of ``group_by = "ip"``: an address, or the IPv6 network
    :func:`~._fields.ip_group` makes of the playbook's prefix (events store addresses only:
    anything wider, even from events stored before they were checked, is never blocked)."""
    try:
        ipaddress.ip_address(key)
        return True
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(key)
    except ValueError:
        return False
    # What ip_group makes of an address in it: the prefix's network (a 6to4 or Teredo
    # address is its IPv4 client's, an address: a 6to4 /48 of old hits is no group now).
    return ipv6_prefix is not None and ip_group(str(network.network_address), ipv6_prefix) == key


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def alerts_for(firings: Sequence[Firing]) -> list[Alert]:
    """For the backtest: the alerts firings would have stored (no id, no block), in the
    order of their times (the time of the event that fired each)."""
    out = []
    ordered = sorted(firings, key=lambda f: (f.last_us, f.last_seq))  # stable: ties kept
    for n, f in enumerate(ordered, 1):
        alert = new_alert(f)
        if alert is not None:
            out.append(alert.stored(n, None, alert.last_at))
    return out


def retry_us(p: Playbook) -> int:
    """How long a playbook whose block was refused at the cap stays quiet for the key: its
    window (a minute at least, the block's duration at most), so that an attacker who filled
    the cap is blocked once there is room, with one alert a window meanwhile, not a minute."""
    seconds = max(60.0, p.window.total_seconds())
    if p.duration is not None:
        seconds = min(seconds, p.duration.total_seconds())
    return int(seconds * US)


#: Addresses and users a webhook's alert lists at most (the most events first).
MOST_LISTED: Final = 20


def behind(events: Sequence[StoredEvent], fired: int | None = None) -> dict[str, Any]:
    """What a webhook receiver needs beside an alert (the events it counted, read by their
    seqs: the last 100 an alert keeps): the client addresses, each with its events and what
    IP intelligence stored (country, network kind), and the users, each with its events;
    :data:`MOST_LISTED` of each at most. The address and user of the event that fired it
    (seq ``fired``: an account takeover's success) come first, then the most events first,
    then as first met. An alert on a user thus says where its logins came from, and one on
    an address whom it tried. A user is listed as its first event spelled it, and counts
    the events of every spelling of its identifiers. ``from_events`` says how many events
    the lists count."""
    ips: Counter[str] = Counter()
    info: dict[str, dict[str, Any]] = {}
    users: Counter[str] = Counter()
    spelled: dict[str, dict[str, str]] = {}
    first_ip = first_user = None
    for event in events:
        spelling = event.user
        user = None if not spelling else user_key(spelling)  # any spelling, one account
        if event.seq == fired:
            first_ip, first_user = event.ip, user
        if event.ip:
            ips[event.ip] += 1
            found = event.enrichment.get("ip_info") if event.enrichment else None
            if isinstance(found, Mapping) and event.ip not in info:
                info[event.ip] = {k: found[k] for k in ("country", "kind") if k in found}
        if event.name == SECURITY_IMPOSSIBLE_TRAVEL:
            _earlier(event, ips, info)  # the login before: the other half of the story
        if user is not None and spelling:
            users[user] += 1
            spelled.setdefault(user, spelling)
    return {
        "addresses": [
            {"ip": ip, "events": n, **info.get(ip, {})} for ip, n in _listed(ips, first_ip)
        ],
        "users": _users_listed(_listed(users, first_user), spelled),
        "from_events": len(events),
    }


#: JSON bytes of users a webhook's alert lists at most, past its first: a user is up to 16
#: identifiers of 256 characters, 70 KB written as JSON escapes them, and 20 of them made a
#: post of 1.4 MB, which receivers' body limits refuse (the alert then lost).
MOST_USER_BYTES: Final = 64 * 1024


def _users_listed(
    top: list[tuple[str, int]], spelled: Mapping[str, dict[str, str]]
) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = []
    spent = 0
    for key, n in top:
        entry = {"user": spelled[key], "events": n}
        if listed:  # the first (the firing event's user) whole, whatever its size
            spent += len(json.dumps(entry))
            if spent > MOST_USER_BYTES:
                break
        listed.append(entry)
    return listed


def _earlier(event: StoredEvent, ips: Counter[str], info: dict[str, dict[str, Any]]) -> None:
    """An impossible travel's earlier login (its address in ``from_ip``, its country in
    ``from_country``), counted as the login it was: the event itself is the later one."""
    earlier = event.properties.get("from_ip")
    if not isinstance(earlier, str) or not earlier or earlier == event.ip:
        return
    ips[earlier] += 1
    country = event.properties.get("from_country")
    if isinstance(country, str) and earlier not in info:
        info[earlier] = {"country": country}


def _listed(counts: Counter[str], first: str | None) -> list[tuple[str, int]]:
    """:data:`MOST_LISTED` of ``counts``: ``first`` (when counted), then the most first."""
    top = counts.most_common(MOST_LISTED + 1)
    if first is not None and first in counts:
        top = [(first, counts[first]), *(kv for kv in top if kv[0] != first)]
    return top[:MOST_LISTED]
