"""Params and results of the system family: health, status, presence, system events, echo."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from krabfast.protocol.frames import StateVersion
from krabfast.protocol.handshake import EventLoopHealth, PresenceEntry
from krabfast.protocol.model import Model, NonEmptyStr, NonNegFloat, NonNegInt

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType


# Bounds on what one system event may carry (the reference bounds only the frame, 25 MiB;
# a gateway that keeps the text in presence, in `status` and in every hello-ok must not).
SYSTEM_EVENT_TEXT_MAX = 65_536
SYSTEM_EVENT_FIELD_MAX = 512
SYSTEM_EVENT_LIST_MAX = 64
EventText = Annotated[str, Meta(min_length=1, max_length=SYSTEM_EVENT_TEXT_MAX)]
ContextStr = Annotated[str, Meta(max_length=SYSTEM_EVENT_FIELD_MAX)]
ContextList = Annotated[list[ContextStr], Meta(max_length=SYSTEM_EVENT_LIST_MAX)]


class SystemEventParams(Model):
    """A system event: free text plus optional presence context from the reporter."""

    text: EventText
    idempotency_key: NonEmptyStr | Unset = UNSET
    session_key: ContextStr | Unset = UNSET
    wake: bool | Unset = UNSET
    device_id: ContextStr | Unset = UNSET
    instance_id: ContextStr | Unset = UNSET
    host: ContextStr | Unset = UNSET
    ip: ContextStr | Unset = UNSET
    mode: ContextStr | Unset = UNSET
    version: ContextStr | Unset = UNSET
    platform: ContextStr | Unset = UNSET
    device_family: ContextStr | Unset = UNSET
    model_identifier: ContextStr | Unset = UNSET
    reason: ContextStr | Unset = UNSET
    last_input_seconds: NonNegFloat | Unset = UNSET
    roles: ContextList | Unset = UNSET
    scopes: ContextList | Unset = UNSET
    tags: ContextList | Unset = UNSET


SystemPresenceResult = list[PresenceEntry]


class SystemEventResult(Model):
    ok: bool


class SystemEchoParams(Model):
    text: str
    idempotency_key: NonEmptyStr | Unset = UNSET


class SystemEchoResult(Model):
    ok: bool
    text: str


class GatewayStatusInfo(Model):
    version: str
    protocol: int
    uptime_ms: NonNegInt
    auth_mode: str
    bind: str
    port: int
    connections: NonNegInt
    state_version: StateVersion


class ProcessMemory(Model):
    rss_bytes: NonNegInt


class StatusParams(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """`status` options. The reference publishes no params schema and ignores other keys."""

    include_channel_summary: bool | Unset = UNSET
    include_cli_projection: bool | Unset = UNSET


class StatusSessionDefaults(Model):
    model: str | None
    context_tokens: NonNegInt | None


class StatusAgentSessions(Model):
    agent_id: NonEmptyStr
    path: str
    count: NonNegInt
    recent: list[dict[str, Any]]


class StatusSessions(Model):
    paths: list[str]
    count: NonNegInt
    defaults: StatusSessionDefaults
    recent: list[dict[str, Any]]
    by_agent: list[StatusAgentSessions]


class StatusHeartbeatAgent(Model):
    agent_id: NonEmptyStr
    enabled: bool
    every: str
    every_ms: NonNegInt
    waiting_for_route: bool


class StatusHeartbeat(Model):
    default_agent_id: NonEmptyStr
    agents: list[StatusHeartbeatAgent]


class CliAgentRow(Model):
    id: NonEmptyStr
    name: str | Unset = UNSET


class CliAgents(Model):
    default_id: str | None
    ownership: Literal["sole", "legacy", "explicit"]
    selection_required: bool
    rows: list[CliAgentRow]


class MemoryPluginStatus(Model):
    enabled: bool
    slot: str | None
    reason: str | Unset = UNSET


class CliProjection(Model):
    """What the reference CLI's `status` reads about agents (asked with includeCliProjection)."""

    agents: CliAgents
    update_channel: str | None
    memory_plugin: MemoryPluginStatus


class StatusResult(Model):
    """`status` summary, keyed like the reference's; families we do not host are empty."""

    runtime_version: str
    heartbeat: StatusHeartbeat
    queued_system_events: list[str]
    event_loop: EventLoopHealth | Unset
    process_memory: ProcessMemory
    pid: NonNegInt
    gateway: GatewayStatusInfo
    channel_summary: list[Any]
    sessions: StatusSessions
    cli_projection: CliProjection | Unset = UNSET


# Payloads of server-pushed events.
class TickEvent(Model):
    ts: NonNegInt


class ShutdownEvent(Model):
    reason: NonEmptyStr
    restart_expected_ms: NonNegInt | Unset = UNSET


class PresenceEvent(Model):
    presence: list[PresenceEntry]
