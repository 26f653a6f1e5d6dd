"""Nodes: capability hosts the gateway invokes. Params, results and events (reference names)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from krabfast.protocol.model import Model, NonEmptyStr, NonNegInt

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType


class NodeListParams(Model):
    pass


class NodeDescribeParams(Model):
    node_id: NonEmptyStr


class NodeRenameParams(Model):
    node_id: NonEmptyStr
    display_name: NonEmptyStr


class NodePairListParams(Model):
    pass


class NodePairApproveParams(Model):
    request_id: NonEmptyStr


class NodePairRejectParams(Model):
    request_id: NonEmptyStr


class NodePairRemoveParams(Model):
    node_id: NonEmptyStr


# Invoking these needs operator.admin (they proxy a browser, upload, or list the host's
# files); any other command needs operator.write, as upstream.
INVOKE_ADMIN_COMMANDS = frozenset(("browser.proxy", "browser.proxy.upload.v1", "fs.listDir",
                                   "terminal.upload"))


def invoke_scope(params: "NodeInvokeParams | None") -> str:
    """The scope a `node.invoke` needs; the least one when params are not decoded yet."""
    if params is not None and params.command in INVOKE_ADMIN_COMMANDS:
        return "operator.admin"
    return "operator.write"


class NodeInvokeParams(Model):
    node_id: NonEmptyStr
    command: NonEmptyStr
    idempotency_key: NonEmptyStr
    params: Any = UNSET
    timeout_ms: NonNegInt | Unset = UNSET
    session_key: NonEmptyStr | Unset = UNSET
    turn_source_channel: str | Unset = UNSET
    turn_source_to: str | Unset = UNSET
    turn_source_account_id: str | Unset = UNSET
    turn_source_thread_id: str | float | Unset = UNSET


class NodeInvokeError(Model):
    code: NonEmptyStr | Unset = UNSET
    message: NonEmptyStr | Unset = UNSET


class NodeInvokeResultParams(Model):
    id: NonEmptyStr
    node_id: NonEmptyStr
    ok: bool
    payload: Any = UNSET
    payload_json: str | Unset = msgspec.field(default=UNSET, name="payloadJSON")
    error: NodeInvokeError | Unset = UNSET


class NodeInvokeProgressParams(Model):
    invoke_id: NonEmptyStr
    node_id: NonEmptyStr
    seq: NonNegInt
    chunk: Annotated[str, Meta(max_length=16384)]


class NodeEventParams(Model):
    event: NonEmptyStr
    payload: Any = UNSET
    payload_json: str | Unset = msgspec.field(default=UNSET, name="payloadJSON")


class NodeEventResult(Model):
    ok: bool
    event: NonEmptyStr
    handled: bool
    reason: NonEmptyStr | Unset = UNSET


class NodeInvokeRequestEvent(Model):
    id: NonEmptyStr
    node_id: NonEmptyStr
    command: NonEmptyStr
    params_json: str | Unset = msgspec.field(default=UNSET, name="paramsJSON")
    timeout_ms: NonNegInt | Unset = UNSET
    idempotency_key: NonEmptyStr | Unset = UNSET


class NodeInvokeResult(Model):
    ok: bool
    node_id: NonEmptyStr
    command: NonEmptyStr
    payload: Any = UNSET
    payload_json: str | Unset = msgspec.field(default=UNSET, name="payloadJSON")


class NodeSkillsUpdateParams(Model):
    skills: list[dict[str, Any]]


class NodePluginToolsUpdateParams(Model):
    tools: list[dict[str, Any]]


class NodeRunnerInventoryUpdateParams(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """Worker-runner inventory a node host reports (open: hosts add fields over time)."""

    protocol_features: list[str] = []
    worker_host: Any = UNSET


class NodeInvokeResultResult(Model):
    """The answer to `node.invoke.result`: `{"ok": true}` when an invoke was waiting for it,
    `{"ok": true, "ignored": true}` when nothing waits (late, unknown id, or another node's).
    Also the answer to `node.invoke.progress`, which (as on the reference without a plugin
    stream consumer) is always `{"ok": true, "ignored": true}`."""

    ok: Literal[True]
    ignored: bool | Unset = UNSET


class NodeInvokeCancelEvent(Model):
    """`node.invoke.cancel`: the invoke timed out or its caller went away; the node may
    stop working on it."""

    invoke_id: NonEmptyStr
    node_id: NonEmptyStr


ApprovalState = Literal["approved", "pending-approval", "pending-reapproval", "unapproved"]


class NodeEntry(Model, kw_only=True):
    """A node as `node.list`, `node.describe`, `node.pair.list` (`paired`) and
    `node.pair.approve` show it, keys in the reference's order (its NodeListNode).

    `clientId`, `clientMode`, `nodePluginTools`, `pathEnv`, `connectedAtMs` and
    `lastConnectedAtMs` are there only while the node is connected; `caps` stay empty until
    a surface was first approved, and `commands` is the effective surface (approved, declared
    and allowed; offline: approved and allowed); the `pending*` keys are there only while a
    command-surface request waits. `skills` (the catalog a connected node published with
    `node.skills.update`) is krabfast's own; the reference does not list it."""

    node_id: NonEmptyStr
    display_name: NonEmptyStr | Unset = UNSET
    platform: NonEmptyStr | Unset = UNSET
    version: NonEmptyStr | Unset = UNSET
    client_id: NonEmptyStr | Unset = UNSET
    client_mode: NonEmptyStr | Unset = UNSET
    device_family: NonEmptyStr | Unset = UNSET
    caps: list[str]
    commands: list[str]
    session_host: bool
    host_stats: dict[str, Any] | Unset = UNSET
    node_plugin_tools: list[dict[str, Any]] | Unset = UNSET
    path_env: NonEmptyStr | Unset = UNSET
    permissions: dict[str, bool] | Unset = UNSET
    approval_state: ApprovalState
    pending_request_id: NonEmptyStr | Unset = UNSET
    pending_declared_caps: list[str] | Unset = UNSET
    pending_declared_commands: list[str] | Unset = UNSET
    connected_at_ms: NonNegInt | Unset = UNSET
    last_connected_at_ms: NonNegInt | Unset = UNSET
    last_seen_at_ms: NonNegInt | Unset = UNSET
    last_seen_reason: NonEmptyStr | Unset = UNSET
    approved_at_ms: NonNegInt | Unset = UNSET
    skills: list[dict[str, Any]] | Unset = UNSET
    paired: bool
    connected: bool


class NodeListResult(Model):
    """Every known node: connected first, then by display name (else node id), then id."""

    ts: NonNegInt
    nodes: list[NodeEntry]


# `{"ts": ..., **node}` with `ts` first, as the reference sends it (a subclass of NodeEntry
# would put `ts` last).
NodeDescribeResult = msgspec.defstruct(
    "NodeDescribeResult",
    [("ts", NonNegInt)] + [(f.name, f.type) if f.default is msgspec.NODEFAULT
                           else (f.name, f.type, f.default)
                           for f in msgspec.structs.fields(NodeEntry)],
    bases=(Model,), module=__name__, kw_only=True,
    namespace={"__doc__": "One node: the gateway's time `ts`, then the node's keys (NodeEntry)."})


class NodeRenameResult(Model):
    node_id: NonEmptyStr
    display_name: NonEmptyStr


class PendingNodeRequest(Model, kw_only=True):
    """A node's command-surface request waiting for an operator (also the
    `node.pair.requested` payload); `requiredApproveScopes` is what approving it needs."""

    request_id: NonEmptyStr
    node_id: NonEmptyStr
    display_name: NonEmptyStr | Unset = UNSET
    platform: NonEmptyStr | Unset = UNSET
    version: NonEmptyStr | Unset = UNSET
    caps: list[str]
    commands: list[str]
    required_approve_scopes: list[NonEmptyStr]
    ts: NonNegInt


class NodePairListResult(Model):
    """Pending command-surface requests, and the nodes with an approved surface."""

    pending: list[PendingNodeRequest]
    paired: list[NodeEntry]


class NodePairApproveResult(Model):
    request_id: NonEmptyStr
    node: NodeEntry


class NodePairRejectResult(Model):
    request_id: NonEmptyStr
    node_id: NonEmptyStr


class NodePairRemoveResult(Model):
    node_id: NonEmptyStr


class NodePairResolvedEvent(Model):
    """A command-surface request was approved or rejected, or a node was removed (then
    `requestId` is empty)."""

    request_id: str
    node_id: NonEmptyStr
    decision: Literal["approved", "rejected", "removed"]
    ts: NonNegInt


class NodeSkillsUpdateResult(Model):
    """The skills catalog the node published, as kept."""

    node_id: NonEmptyStr
    skills: list[dict[str, Any]]


class NodePluginToolsUpdateResult(Model):
    """The plugin tool descriptors the node published, as kept."""

    node_id: NonEmptyStr
    tools: list[dict[str, Any]]


class NodeRunnerInventoryUpdateResult(Model):
    node_id: NonEmptyStr
