"""The method table: every method krabfast serves, its params/result Structs and scope.

This table is the single source for dispatch (validation + scope check), for
`hello-ok.features.methods`, and for the `methods` map of the exported JSON Schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from krabfast.protocol import scopes as S
from krabfast.protocol import devices as dev
from krabfast.protocol import nodes as nod
from krabfast.protocol import system as sysp
from krabfast.protocol.handshake import HealthSnapshot


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    params: type | None  # Struct decoded from params; None = params are ignored (as upstream)
    result: type | None
    scope: str  # an operator scope, or scopes.NODE_ROLE_SCOPE
    # Dedupe on params.idempotencyKey. The reference dedupes none of the methods krabfast
    # serves today; krabfast keeps it for its own side effects, keyed by caller and params.
    side_effect: bool = False
    summary: str = ""
    # Answered for every authenticated connection whatever its role and scopes; the
    # reference exempts `health` this way (its published scope is still operator.read).
    open_to_all: bool = False
    # Always take the connection's general path (e.g. the handler may ask for the caller's
    # socket to close once the reply is out).
    general_path: bool = False
    # For scope == DYNAMIC_SCOPE: the scope a call needs given its decoded params (None:
    # not decoded yet, the least scope any call needs). Checked before params are used,
    # before idempotent replays too.
    scope_for: Callable[[Any], str] | None = None


METHOD_SPECS: tuple[MethodSpec, ...] = (
    MethodSpec("health", None, HealthSnapshot, S.READ, summary="gateway health snapshot",
               open_to_all=True),
    MethodSpec("status", sysp.StatusParams, sysp.StatusResult, S.READ, summary="gateway summary"),
    MethodSpec("system-presence", None, sysp.SystemPresenceResult, S.READ,
               summary="current presence entries, newest first, the gateway's own row on top"),
    MethodSpec("system-event", sysp.SystemEventParams, sysp.SystemEventResult, S.ADMIN,
               side_effect=True, summary="append a system event to presence and broadcast it"),
    MethodSpec("system.echo", sysp.SystemEchoParams, sysp.SystemEchoResult, S.READ,
               summary="echo text back (connectivity check)"),
    MethodSpec("device.pair.list", dev.DevicePairListParams, dev.DevicePairListResult, S.PAIRING,
               summary="pending pairing requests and paired devices"),
    MethodSpec("device.pair.approve", dev.DevicePairApproveParams, dev.DevicePairApproveResult,
               S.PAIRING, summary="approve a pending pairing request"),
    MethodSpec("device.pair.reject", dev.DevicePairRejectParams, dev.DevicePairRejectResult,
               S.PAIRING, summary="reject a pending pairing request"),
    MethodSpec("device.pair.remove", dev.DevicePairRemoveParams, dev.DevicePairRemoveResult,
               S.PAIRING, summary="forget a paired device (its sockets close)", general_path=True),
    MethodSpec("device.pair.rename", dev.DevicePairRenameParams, dev.DevicePairRenameResult,
               S.PAIRING, summary="set a paired device's operator label"),
    MethodSpec("device.token.rotate", dev.DeviceTokenRotateParams, dev.DeviceTokenRotateResult,
               S.PAIRING, summary="replace a device token (its sockets for that role close)",
               general_path=True),
    MethodSpec("device.token.revoke", dev.DeviceTokenRevokeParams, dev.DeviceTokenRevokeResult,
               S.PAIRING, summary="revoke a device token (its sockets for that role close)",
               general_path=True),
    MethodSpec("node.list", nod.NodeListParams, None, S.READ,
               summary="connected and paired nodes"),
    MethodSpec("node.describe", nod.NodeDescribeParams, None, S.READ, summary="one node"),
    MethodSpec("node.rename", nod.NodeRenameParams, None, S.PAIRING, summary="set a node's name"),
    MethodSpec("node.pair.list", nod.NodePairListParams, None, S.PAIRING,
               summary="pending node command-surface requests and approved nodes"),
    MethodSpec("node.pair.approve", nod.NodePairApproveParams, None, S.PAIRING,
               summary="approve a node's declared commands (plus write, or admin for host commands)"),
    MethodSpec("node.pair.reject", nod.NodePairRejectParams, None, S.PAIRING,
               summary="reject a node's command-surface request"),
    MethodSpec("node.pair.remove", nod.NodePairRemoveParams, None, S.PAIRING,
               summary="forget a node (its socket closes)"),
    MethodSpec("node.invoke", nod.NodeInvokeParams, nod.NodeInvokeResult, S.DYNAMIC_SCOPE,
               side_effect=True, summary="run an approved command on a connected node",
               scope_for=nod.invoke_scope),
    MethodSpec("node.invoke.result", nod.NodeInvokeResultParams, nod.OkResult, S.NODE_ROLE_SCOPE,
               summary="a node answers an invoke"),
    MethodSpec("node.invoke.progress", nod.NodeInvokeProgressParams, nod.OkResult,
               S.NODE_ROLE_SCOPE, summary="a node reports progress on an invoke"),
    MethodSpec("node.event", nod.NodeEventParams, nod.NodeEventResult, S.NODE_ROLE_SCOPE,
               summary="a node reports an event (host stats, presence)"),
    MethodSpec("node.skills.update", nod.NodeSkillsUpdateParams, None, S.NODE_ROLE_SCOPE,
               summary="a node publishes its skills catalog"),
    MethodSpec("node.pluginTools.update", nod.NodePluginToolsUpdateParams, None, S.NODE_ROLE_SCOPE,
               summary="a node publishes its plugin tool descriptors"),
    MethodSpec("node.runnerInventory.update", nod.NodeRunnerInventoryUpdateParams, None,
               S.NODE_ROLE_SCOPE, summary="a node reports its worker-runner inventory"),
)

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in METHOD_SPECS}

# Server-pushed events, with the scope a socket needs to receive them (None = every
# authenticated socket) and whether a slow socket may miss them.
@dataclass(frozen=True, slots=True)
class EventSpec:
    name: str
    payload: type | None
    scope: str | None = None
    droppable: bool = False
    # Each event carries the whole state (presence): a socket that is behind needs only
    # the newest one, sent when it drains, instead of missing it.
    coalesce: bool = False


EVENT_SPECS: tuple[EventSpec, ...] = (
    EventSpec("connect.challenge", None),
    # As on the reference, only presence may be skipped for a slow socket; a socket too
    # far behind to take a tick is closed (1008 slow consumer).
    EventSpec("tick", sysp.TickEvent),
    EventSpec("presence", sysp.PresenceEvent, scope=S.READ, droppable=True, coalesce=True),
    EventSpec("health", HealthSnapshot),
    EventSpec("shutdown", sysp.ShutdownEvent),
    EventSpec("device.pair.requested", dev.PendingDevice, scope=S.PAIRING, droppable=True),
    EventSpec("device.pair.resolved", dev.DevicePairResolvedEvent, scope=S.PAIRING, droppable=True),
    EventSpec("device.pair.changed", dev.DevicePairChangedEvent, scope=S.PAIRING, droppable=True),
    EventSpec("node.pair.requested", None, scope=S.PAIRING, droppable=True),
    EventSpec("node.pair.resolved", None, scope=S.PAIRING, droppable=True),
    EventSpec("node.invoke.request", nod.NodeInvokeRequestEvent),
    EventSpec("node.invoke.cancel", None),
)
EVENTS: dict[str, EventSpec] = {spec.name: spec for spec in EVENT_SPECS}
