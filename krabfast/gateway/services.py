"""What a handler may use of the gateway, through `call.services`: the named seams (event
bus, connection directory, pairing, node router) and read-only views of the gateway's
state. Handlers get this, never the hub or a raw connection."""

from __future__ import annotations


class Services:
    __slots__ = ("_hub", "config", "clock_ms", "server_version", "bus", "directory",
                 "health_snapshot", "health_json", "presence_json")

    def __init__(self, hub) -> None:
        self._hub = hub
        self.config = hub.config
        self.clock_ms = hub.clock_ms
        self.server_version = hub.server_version
        self.bus = hub.bus
        self.directory = hub.directory
        # The hot reads, bound once (no extra call per request).
        self.health_snapshot = hub.health_snapshot
        self.health_json = hub.health_json
        self.presence_json = hub.presence_json

    # Opened on first use (they touch the durable store).
    @property
    def pairing(self):
        return self._hub.pairing

    @property
    def nodes(self):
        return self._hub.nodes

    @property
    def conversations(self):
        return self._hub.conversations

    @property
    def system_events(self):
        return self._hub.system_events

    def add_system_event(self, key: str, entry) -> None:
        self._hub.add_system_event(key, entry)

    def uptime_ms(self) -> int:
        return self._hub.uptime_ms()

    def state_version(self):
        return self._hub.state_version()
