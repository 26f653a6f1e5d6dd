"""System family: health, status, system-presence, system-event, system.echo."""

from __future__ import annotations

import os

from msgspec import UNSET

from krabfast.protocol.handshake import PresenceEntry
from krabfast.protocol.system import (CliAgentRow, CliAgents, CliProjection, GatewayStatusInfo,
                                      MemoryPluginStatus, ProcessMemory, StatusAgentSessions,
                                      StatusHeartbeat, StatusResult, StatusSessionDefaults,
                                      StatusSessions, SystemEchoResult, SystemEventParams,
                                      SystemEventResult)
from krabfast.protocol.version import PROTOCOL_VERSION


def health(call, params):
    return call.hub.health_snapshot()


DEFAULT_AGENT_ID = "main"
# Agents krabfast hosts: the default one, with no sessions and no heartbeat yet.
_AGENT_SESSIONS = [StatusAgentSessions(agent_id=DEFAULT_AGENT_ID, path="", count=0, recent=[])]
_HEARTBEAT = StatusHeartbeat(default_agent_id=DEFAULT_AGENT_ID, agents=[])
_CLI_PROJECTION = CliProjection(
    agents=CliAgents(default_id=DEFAULT_AGENT_ID, ownership="sole", selection_required=False,
                     rows=[CliAgentRow(id=DEFAULT_AGENT_ID)]),
    update_channel=None,
    memory_plugin=MemoryPluginStatus(enabled=False, slot=None, reason="no memory plugin in krabfast"))


def status(call, params):
    hub = call.hub
    cfg = hub.config
    health = hub.health_snapshot()
    return StatusResult(
        runtime_version=hub.server_version,
        cli_projection=_CLI_PROJECTION if params.include_cli_projection is True else UNSET,
        heartbeat=_HEARTBEAT,
        queued_system_events=list(hub.system_events),
        event_loop=health.event_loop,
        process_memory=ProcessMemory(rss_bytes=_rss_bytes()),
        pid=os.getpid(),
        channel_summary=[],
        sessions=StatusSessions(paths=[], count=0, recent=[], by_agent=_AGENT_SESSIONS,
                                defaults=StatusSessionDefaults(model=None, context_tokens=None)),
        gateway=GatewayStatusInfo(
            version=hub.server_version, protocol=PROTOCOL_VERSION, uptime_ms=hub.uptime_ms(),
            auth_mode=cfg.auth_mode, bind=cfg.bind, port=cfg.port,
            connections=len(hub.subscribers), state_version=hub.state_version()),
    )


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def system_presence(call, params):
    return call.hub.presence_json()


_EVENT_CONTEXT_FIELDS = ("device_id", "instance_id", "host", "ip", "mode", "version", "platform",
                         "device_family", "model_identifier", "reason", "roles", "scopes", "tags")


def system_event(call, params: SystemEventParams):
    # Empty strings mean "not given" (the presence schema wants non-empty values).
    context = {f: v for f in _EVENT_CONTEXT_FIELDS if (v := getattr(params, f))}
    if params.last_input_seconds is not UNSET:
        context["last_input_seconds"] = int(params.last_input_seconds)
    # One row per reporter: a device or instance updates its row; bare text is keyed by
    # its start, so repeating the same text refreshes one row.
    key = "event:" + (context.get("device_id") or context.get("instance_id") or params.text[:64]).lower()
    call.hub.add_system_event(key, PresenceEntry(text=params.text, ts=call.hub.clock_ms(), **context))
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
