"""The connect handshake: challenge, ConnectParams, hello-ok and its snapshot."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from krabfast.protocol.frames import StateVersion
from krabfast.protocol.model import Model, NonEmptyStr, NonNegFloat, NonNegInt, PosInt

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType

# Closed enums, as the reference schema publishes them.
ClientId = Literal[
    "webchat-ui", "openclaw-control-ui", "openclaw-browser-copilot", "openclaw-tui", "webchat",
    "cli", "gateway-client", "openclaw-macos", "openclaw-linux", "openclaw-ios",
    "openclaw-watchos", "openclaw-android", "node-host", "openclaw-worker", "test",
    "fingerprint", "openclaw-probe",
]
ClientMode = Literal["webchat", "cli", "ui", "backend", "node", "worker", "probe", "test"]


class ConnectChallenge(Model):
    nonce: NonEmptyStr
    ts: NonNegInt


class ClientInfo(Model):
    id: ClientId
    version: NonEmptyStr
    platform: NonEmptyStr
    mode: ClientMode
    display_name: NonEmptyStr | Unset = UNSET
    build_id: NonEmptyStr | Unset = UNSET
    device_family: NonEmptyStr | Unset = UNSET
    model_identifier: NonEmptyStr | Unset = UNSET
    time_zone: NonEmptyStr | Unset = UNSET
    instance_id: NonEmptyStr | Unset = UNSET


class DeviceAuth(Model):
    id: NonEmptyStr
    public_key: NonEmptyStr
    signature: NonEmptyStr
    signed_at: NonNegInt
    nonce: NonEmptyStr


class ConnectAuth(Model):
    token: str | Unset = UNSET
    bootstrap_token: str | Unset = UNSET
    device_token: str | Unset = UNSET
    password: str | Unset = UNSET
    approval_runtime_token: str | Unset = UNSET
    agent_runtime_identity_token: str | Unset = UNSET


class WorkerRuns(Model):
    bundle_hash: str
    openclaw_version: str
    protocol_features: list[str]
    bundle_prewarm: PosInt | Unset = UNSET


class ConnectParams(Model):
    min_protocol: PosInt
    max_protocol: PosInt
    client: ClientInfo
    caps: list[NonEmptyStr] = []
    commands: list[NonEmptyStr] | Unset = UNSET
    computer_use: Any = UNSET
    worker_runs: WorkerRuns | Unset = UNSET
    permissions: dict[str, bool] | Unset = UNSET
    path_env: str | Unset = UNSET
    role: NonEmptyStr | Unset = UNSET
    scopes: list[NonEmptyStr] | Unset = UNSET
    device: DeviceAuth | Unset = UNSET
    auth: ConnectAuth | Unset = UNSET
    locale: str | Unset = UNSET
    user_agent: str | Unset = UNSET


class PresenceEntry(Model):
    ts: NonNegInt
    host: NonEmptyStr | Unset = UNSET
    ip: NonEmptyStr | Unset = UNSET
    version: NonEmptyStr | Unset = UNSET
    platform: NonEmptyStr | Unset = UNSET
    device_family: NonEmptyStr | Unset = UNSET
    model_identifier: NonEmptyStr | Unset = UNSET
    time_zone: NonEmptyStr | Unset = UNSET
    mode: NonEmptyStr | Unset = UNSET
    last_input_seconds: NonNegInt | Unset = UNSET
    reason: NonEmptyStr | Unset = UNSET
    tags: list[NonEmptyStr] | Unset = UNSET
    text: str | Unset = UNSET
    online_since: NonNegInt | Unset = UNSET
    last_activity_at: NonNegInt | Unset = UNSET
    device_id: NonEmptyStr | Unset = UNSET
    roles: list[NonEmptyStr] | Unset = UNSET
    scopes: list[NonEmptyStr] | Unset = UNSET
    instance_id: NonEmptyStr | Unset = UNSET


class EventLoopHealth(Model):
    degraded: bool
    reasons: list[Literal["event_loop_delay", "event_loop_utilization", "cpu"]]
    interval_ms: NonNegFloat
    delay_p99_ms: NonNegFloat
    delay_max_ms: NonNegFloat
    utilization: NonNegFloat
    cpu_core_ratio: NonNegFloat
    degraded_since_ms: NonNegInt | None | Unset = UNSET


class HealthSessions(Model):
    path: str
    count: NonNegInt
    recent: list[dict[str, Any]]


class HealthPlugins(Model):
    loaded: list[str]
    errors: list[dict[str, Any]]
    unavailable: list[dict[str, Any]]


class HealthSnapshot(Model):
    """The gateway's health summary: the reference's keys, with the families krabfast
    does not host (channels, agents) present and empty."""

    ok: Literal[True]
    ts: NonNegInt
    duration_ms: NonNegInt
    plugins: HealthPlugins
    channels: dict[str, Any]
    channel_order: list[str]
    channel_labels: dict[str, str]
    agents: list[dict[str, Any]]
    heartbeat_seconds: NonNegInt | Unset = UNSET
    default_agent_id: str | Unset = UNSET
    sessions: HealthSessions | Unset = UNSET
    event_loop: EventLoopHealth | Unset = UNSET


def empty_health(ts: int, event_loop: EventLoopHealth | None) -> HealthSnapshot:
    return HealthSnapshot(ok=True, ts=ts, duration_ms=0,
                          plugins=HealthPlugins(loaded=[], errors=[], unavailable=[]),
                          channels={}, channel_order=[], channel_labels={}, agents=[],
                          event_loop=event_loop if event_loop is not None else UNSET)


class SessionDefaults(Model, kw_only=True):
    """Where a chat client starts: the default agent and its main session, and whether a
    real model is configured (false: the built-in offline model answers, and the Control UI
    offers onboarding)."""

    default_agent_id: NonEmptyStr
    model_configured: bool | Unset = UNSET
    main_key: NonEmptyStr
    main_session_key: NonEmptyStr
    scope: NonEmptyStr | Unset = UNSET


class Snapshot(Model):
    presence: list[PresenceEntry]
    health: HealthSnapshot
    state_version: StateVersion
    uptime_ms: NonNegInt
    auth_mode: Literal["none", "token", "password", "trusted-proxy"] | Unset = UNSET
    state_dir: str | Unset = UNSET
    session_defaults: SessionDefaults | Unset = UNSET


class ServerInfo(Model):
    version: NonEmptyStr
    conn_id: NonEmptyStr


class Features(Model):
    methods: list[NonEmptyStr]
    events: list[NonEmptyStr]
    capabilities: list[NonEmptyStr] | Unset = UNSET


class HelloAuth(Model):
    role: NonEmptyStr
    scopes: list[NonEmptyStr]
    device_token: NonEmptyStr | Unset = UNSET
    issued_at_ms: NonNegInt | Unset = UNSET


class Policy(Model):
    max_payload: PosInt
    max_buffered_bytes: PosInt
    tick_interval_ms: PosInt


class HelloOk(Model):
    type: Literal["hello-ok"]
    protocol: PosInt
    server: ServerInfo
    features: Features
    snapshot: Snapshot
    auth: HelloAuth
    policy: Policy
