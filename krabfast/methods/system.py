"""System family: health, status, system-presence, system-event, system.echo."""

from __future__ import annotations

import os

from msgspec import UNSET

from krabfast.protocol import scopes as S
from krabfast.protocol.handshake import HealthSnapshot, PresenceEntry
from krabfast.protocol.methods import MethodTable
from krabfast.protocol.system import (CliAgentRow, CliAgents, CliProjection, GatewayStatusInfo,
                                      MemoryPluginStatus, ProcessMemory, StatusAgentSessions,
                                      StatusHeartbeat, StatusResult, StatusSessionDefaults,
                                      StatusParams, StatusSessions, SystemEchoParams,
                                      SystemEchoResult, SystemEventParams, SystemEventResult,
                                      SystemPresenceResult)
from krabfast.protocol.version import PROTOCOL_VERSION

table = MethodTable()


@table.method("health", None, HealthSnapshot, S.READ, summary="gateway health snapshot",
              open_to_all=True)
def health(call, params):
    return call.services.health_json()  # a HealthSnapshot, encoded once per snapshot


DEFAULT_AGENT_ID = "main"
# Agents krabfast hosts: the default one, with no sessions and no heartbeat yet.
_AGENT_SESSIONS = [StatusAgentSessions(agent_id=DEFAULT_AGENT_ID, path="", count=0, recent=[])]
_HEARTBEAT = StatusHeartbeat(default_agent_id=DEFAULT_AGENT_ID, agents=[])
_CLI_PROJECTION = CliProjection(
    agents=CliAgents(default_id=DEFAULT_AGENT_ID, ownership="sole", selection_required=False,
                     rows=[CliAgentRow(id=DEFAULT_AGENT_ID)]),
    update_channel=None,
    memory_plugin=MemoryPluginStatus(enabled=False, slot=None, reason="no memory plugin in krabfast"))


@table.method("status", StatusParams, StatusResult, S.READ, summary="gateway summary")
def status(call, params):
    services = call.services
    cfg = services.config
    health = services.health_snapshot()
    return StatusResult(
        runtime_version=services.server_version,
        cli_projection=_CLI_PROJECTION if params.include_cli_projection is True else UNSET,
        heartbeat=_HEARTBEAT,
        queued_system_events=list(services.system_events),
        event_loop=health.event_loop,
        process_memory=ProcessMemory(rss_bytes=_rss_bytes()),
        pid=os.getpid(),
        channel_summary=[],
        sessions=StatusSessions(paths=[], count=0, recent=[], by_agent=_AGENT_SESSIONS,
                                defaults=StatusSessionDefaults(model=None, context_tokens=None)),
        gateway=GatewayStatusInfo(
            version=services.server_version, protocol=PROTOCOL_VERSION, uptime_ms=services.uptime_ms(),
            auth_mode=cfg.auth_mode, bind=cfg.bind, port=cfg.port,
            connections=services.directory.open_count(), state_version=services.state_version()),
    )


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@table.method("system-presence", None, SystemPresenceResult, S.READ,
              summary="current presence entries, newest first, the gateway's own row on top")
def system_presence(call, params):
    return call.services.presence_json()


_EVENT_CONTEXT_FIELDS = ("device_id", "instance_id", "host", "ip", "mode", "version", "platform",
                         "device_family", "model_identifier", "reason", "roles", "scopes", "tags")


@table.method("system-event", SystemEventParams, SystemEventResult, S.ADMIN, idempotent=True,
              summary="append a system event to presence and broadcast it")
def system_event(call, params: SystemEventParams):
    # Empty strings mean "not given" (the presence schema wants non-empty values).
    context = {f: v for f in _EVENT_CONTEXT_FIELDS if (v := getattr(params, f))}
    if params.last_input_seconds is not UNSET:
        context["last_input_seconds"] = int(params.last_input_seconds)
    # One row per reporter: a device or instance updates its row; bare text is keyed by
    # its start, so repeating the same text refreshes one row.
    key = "event:" + (context.get("device_id") or context.get("instance_id") or params.text[:64]).lower()
    services = call.services
    services.add_system_event(key, PresenceEntry(text=params.text, ts=services.clock_ms(), **context))
    return SystemEventResult(ok=True)


@table.method("system.echo", SystemEchoParams, SystemEchoResult, S.READ,
              summary="echo text back (connectivity check)")
def system_echo(call, params):
    return SystemEchoResult(ok=True, text=params.text)

