"""What IP intelligence reads of the collector's own memory: recent IP blocks, and the
addresses playbooks recently alerted on (the threat score's ``blocked_recently`` and
``playbook_alert``). Both are bounded reads, newest first, of the IP blocks and the alerts
grouped by IP made since a time, through partial indexes of those rows by time (schema 15):
no other block or alert is read, so a flood of user blocks cannot push an IP block out."""

from __future__ import annotations

from datetime import datetime

from ._parts import SqlPart
from .model import to_us

__all__ = ["IntelQueries"]


class IntelQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    def recent_ip_blocks(self, since: datetime, limit: int) -> list[str]:
        """The networks of the newest ``limit`` IP blocks made since ``since`` (active or
        not)."""
        rows = self._read(
            "SELECT ip FROM blocks WHERE type = 'block_ip' AND created_at >= ? "
            "ORDER BY created_at DESC LIMIT ?",
            [to_us(since), max(0, limit)],
        )
        return [ip for (ip,) in rows if ip]

    def recent_alert_ips(self, since: datetime, limit: int) -> list[str]:
        """The IPs of the newest ``limit`` alerts of playbooks grouped by IP made since
        ``since``."""
        rows = self._read(
            "SELECT group_key FROM alerts WHERE group_by = 'ip' AND created_at >= ? "
            "ORDER BY created_at DESC LIMIT ?",
            [to_us(since), max(0, limit)],
        )
        return [key for (key,) in rows]
