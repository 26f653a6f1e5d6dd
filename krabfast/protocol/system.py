"""Params and results of the system family: health, status, presence, system events, echo."""

from __future__ import annotations

from typing import Any

import msgspec

from krabfast.protocol.frames import StateVersion
from krabfast.protocol.handshake import EventLoopHealth, PresenceEntry
from krabfast.protocol.model import Model, NonEmptyStr, NonNegFloat, NonNegInt

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType


class SystemEventParams(Model):
    """A system event: free text plus optional presence context from the reporter."""

    text: NonEmptyStr
    idempotency_key: NonEmptyStr | Unset = UNSET
    session_key: str | Unset = UNSET
    wake: bool | Unset = UNSET
    device_id: str | Unset = UNSET
    instance_id: str | Unset = UNSET
    host: str | Unset = UNSET
    ip: str | Unset = UNSET
    mode: str | Unset = UNSET
    version: str | Unset = UNSET
    platform: str | Unset = UNSET
    device_family: str | Unset = UNSET
    model_identifier: str | Unset = UNSET
    reason: str | Unset = UNSET
    last_input_seconds: NonNegFloat | Unset = UNSET
    roles: list[str] | Unset = UNSET
    scopes: list[str] | Unset = UNSET
    tags: list[str] | Unset = UNSET


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


class StatusSessions(Model):
    paths: list[str]
    count: NonNegInt
    recent: list[dict[str, Any]]


class StatusResult(Model):
    """`status` summary, keyed like the reference's; families we do not host are empty."""

    runtime_version: str
    queued_system_events: list[str]
    event_loop: EventLoopHealth | Unset
    process_memory: ProcessMemory
    pid: NonNegInt
    gateway: GatewayStatusInfo
    channel_summary: list[Any]
    sessions: StatusSessions


# Payloads of server-pushed events.
class TickEvent(Model):
    ts: NonNegInt


class ShutdownEvent(Model):
    reason: NonEmptyStr
    restart_expected_ms: NonNegInt | Unset = UNSET


class PresenceEvent(Model):
    presence: list[PresenceEntry]
