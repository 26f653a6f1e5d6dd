"""Presence: the gateway's own "self" row plus keyed rows for connected clients and
system events. Rows expire 5 minutes after their last update (self never does); at most
`max_entries` are kept. Listing order is newest first, self always on top, as the
reference does. `version` bumps on every change; it is `stateVersion.presence`.
"""

from __future__ import annotations

import platform
import socket
import uuid

import msgspec

from krabfast.protocol.handshake import PresenceEntry

PRESENCE_TTL_MS = 300_000


def _primary_ip() -> str:
    """Best guess at this host's outward address, without sending any packet."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET: connect() on UDP only picks a route
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def self_entry(version: str, instance_id: str | None = None) -> PresenceEntry:
    host = socket.gethostname() or "localhost"
    ip = _primary_ip()
    system = platform.system()
    return PresenceEntry(
        ts=0, host=host, ip=ip, version=version,
        platform=f"{system.lower()} {platform.release()}".strip(), device_family=system or "unknown",
        mode="gateway", reason="self", instance_id=instance_id or str(uuid.uuid4()),
        text=f"Gateway: {host} ({ip}) · app {version} · mode gateway · reason self")


class PresenceTable:
    def __init__(self, own: PresenceEntry | None = None, max_entries: int = 200,
                 ttl_ms: int = PRESENCE_TTL_MS) -> None:
        self.own = own
        self.max_entries = max_entries
        self.ttl_ms = ttl_ms
        self._rows: dict[str, PresenceEntry] = {}
        self.version = 1  # the reference's counter starts at 1 too

    def entries(self, now_ms: int) -> list[PresenceEntry]:
        self.prune(now_ms)
        rows = sorted(self._rows.values(), key=lambda e: e.ts, reverse=True)
        if self.own is not None:
            rows.insert(0, msgspec.structs.replace(self.own, ts=now_ms))
        return rows

    def prune(self, now_ms: int) -> bool:
        """Drop expired rows; True if any went (the caller may broadcast)."""
        cutoff = now_ms - self.ttl_ms
        stale = [k for k, e in self._rows.items() if e.ts <= cutoff]
        for key in stale:
            del self._rows[key]
        if stale:
            self.version += 1
        return bool(stale)

    def upsert(self, key: str, entry: PresenceEntry) -> None:
        rows = self._rows
        rows.pop(key, None)
        rows[key] = entry
        while len(rows) > self.max_entries:
            del rows[min(rows, key=lambda k: rows[k].ts)]
        self.version += 1

    def update(self, key: str, **changes) -> bool:
        entry = self._rows.get(key)
        if entry is None:
            return False
        self._rows[key] = msgspec.structs.replace(entry, **changes)
        self.version += 1
        return True

    def get(self, key: str) -> PresenceEntry | None:
        return self._rows.get(key)
