"""System family: health, status, system-presence, system-event, system.echo."""

from __future__ import annotations

from krabfast.protocol.handshake import PresenceEntry
from krabfast.protocol.system import (GatewayStatusInfo, StatusResult, SystemEchoResult,
                                      SystemEventParams, SystemEventResult)
from krabfast.protocol.version import PROTOCOL_VERSION


def health(call, params):
    return call.hub.health_snapshot()


def status(call, params):
    hub = call.hub
    cfg = hub.config
    return StatusResult(
        ok=True,
        ts=hub.clock_ms(),
        gateway=GatewayStatusInfo(
            version=hub.server_version, protocol=PROTOCOL_VERSION, uptime_ms=hub.uptime_ms(),
            auth_mode=cfg.auth_mode, bind=cfg.bind, port=cfg.port,
            connections=len(hub.subscribers), state_version=hub.state_version()),
        presence=hub.presence.entries(),
        health=hub.health_snapshot(),
    )


def system_presence(call, params):
    return call.hub.presence.entries()


_EVENT_CONTEXT_FIELDS = ("device_id", "instance_id", "host", "ip", "mode", "version", "platform",
                         "device_family", "model_identifier", "last_input_seconds", "reason", "tags")


def system_event(call, params: SystemEventParams):
    context = {f: getattr(params, f) for f in _EVENT_CONTEXT_FIELDS}
    call.hub.add_system_event(PresenceEntry(text=params.text, ts=call.hub.clock_ms(), **context))
    return SystemEventResult(ok=True)


def system_echo(call, params):
    return SystemEchoResult(ok=True, text=params.text)


HANDLERS = {
    "health": health,
    "status": status,
    "system-presence": system_presence,
    "system-event": system_event,
    "system.echo": system_echo,
}
