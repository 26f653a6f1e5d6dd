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


class OkResult(Model):
    ok: Literal[True]
