"""Presence: the gateway's own "self" row, one row per identified client (keyed by
device, instance or connection), and recent system events `{text, ts}`.

Order follows the reference: self first, then everything else newest first. The version
counter bumps on every change and is what `stateVersion.presence` reports.
"""

from __future__ import annotations

import platform
import socket
import uuid

import msgspec

from krabfast.protocol.handshake import PresenceEntry


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
    def __init__(self, max_events: int, own: PresenceEntry | None = None) -> None:
        self.max_events = max_events
        self.own = own
        self._clients: dict[str, PresenceEntry] = {}
        self._events: list[PresenceEntry] = []
        self.version = 0

    def entries(self, now_ms: int) -> list[PresenceEntry]:
        rows = sorted([*self._clients.values(), *self._events], key=lambda e: e.ts, reverse=True)
        if self.own is not None:
            rows.insert(0, msgspec.structs.replace(self.own, ts=now_ms))
        return rows

    def events(self) -> list[PresenceEntry]:
        return list(self._events)

    def upsert_client(self, key: str, entry: PresenceEntry) -> None:
        self._clients[key] = entry
        self.version += 1

    def remove_client(self, key: str) -> bool:
        if self._clients.pop(key, None) is None:
            return False
        self.version += 1
        return True

    def add_event(self, entry: PresenceEntry) -> None:
        self._events.append(entry)
        if len(self._events) > self.max_events:
            del self._events[: len(self._events) - self.max_events]
        self.version += 1

    def client(self, key: str) -> PresenceEntry | None:
        return self._clients.get(key)
