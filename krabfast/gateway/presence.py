"""Presence: one row per identified client (keyed by device, instance or connection),
plus recent system events, each `{text, ts}`; a version counter bumps on every change."""

from __future__ import annotations

from collections import OrderedDict

import msgspec

from krabfast.protocol.handshake import PresenceEntry


class PresenceTable:
    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._clients: OrderedDict[str, PresenceEntry] = OrderedDict()
        self._events: list[PresenceEntry] = []
        self.version = 0

    def entries(self) -> list[PresenceEntry]:
        return [*self._clients.values(), *self._events]

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

    def replace(self, key: str, **changes) -> None:
        entry = self._clients.get(key)
        if entry is not None:
            self._clients[key] = msgspec.structs.replace(entry, **changes)
