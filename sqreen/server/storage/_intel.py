"""What IP intelligence reads of the collector's own memory: recent IP blocks, and the
addresses playbooks recently alerted on (the threat score's ``blocked_recently`` and
``playbook_alert``). Both are bounded reads of the newest rows by primary key, filtered on
time in Python: neither table has a time index, and neither needs one for this."""

from __future__ import annotations

from datetime import datetime

from ._parts import SqlPart
from .model import to_us

__all__ = ["IntelQueries"]


class IntelQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    def recent_ip_blocks(self, since: datetime, limit: int) -> list[str]:
        """The networks of the IP blocks made since ``since`` (active or not), among the
        newest ``limit`` blocks."""
        cutoff = to_us(since)
        rows = self._read(
            "SELECT type, ip, created_at FROM blocks ORDER BY id DESC LIMIT ?", [max(0, limit)]
        )
        return [ip for kind, ip, at in rows if kind == "block_ip" and ip and at >= cutoff]

    def recent_alert_ips(self, since: datetime, limit: int) -> list[str]:
        """The IPs playbooks grouped by IP alerted on since ``since``, among the newest
        ``limit`` alerts."""
        cutoff = to_us(since)
        rows = self._read(
            "SELECT group_by, group_key, created_at FROM alerts ORDER BY id DESC LIMIT ?",
            [max(0, limit)],
        )
        return [key for by, key, at in rows if by == "ip" and at >= cutoff]
