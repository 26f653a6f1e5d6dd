"""The node router: connected capability hosts, their approved command surface, and
invocation (relay an invoke to the node's socket and its result back).

A node is a device connected with role "node". It declares `commands` at connect; an
operator approves that surface (node.pair.approve) once, and a node may then be invoked
for commands that are declared, approved and allowed by the gateway's allow/deny lists.
Invocation relays `node.invoke.request` to the node's socket and waits for the node's
`node.invoke.result`.
"""

from __future__ import annotations

import asyncio
import uuid

import msgspec

from krabfast.protocol.errors import ErrorCode, GatewayError, invalid_request
from krabfast.protocol.node_commands import approve_scopes
from krabfast.protocol.nodes import NodeInvokeRequestEvent, NodeInvokeResult
from krabfast.store.nodes import NodeRecord, NodeStore

UNSET = msgspec.UNSET
DEFAULT_INVOKE_TIMEOUT_MS = 30_000

# Privacy-heavy commands that stay off unless the gateway opts in (--node-commands-allow).
OPT_IN_COMMANDS = frozenset(("camera.snap", "camera.clip", "camera.ptz.control", "screen.record",
                             "contacts.add", "calendar.add", "reminders.add", "health.summary",
                             "sms.send", "sms.search"))


class PendingInvoke:
    __slots__ = ("id", "node_id", "command", "future", "node_conn", "node_conn_id")

    def __init__(self, invoke_id: str, node_id: str, command: str, future, node_conn) -> None:
        self.id = invoke_id
        self.node_id = node_id
        self.command = command
        self.future = future
        self.node_conn = node_conn
        self.node_conn_id = node_conn.conn_id


def node_error(node_code: str, message: str, dispatched: bool, *, code: str | None = None,
               headline: str | None = None) -> GatewayError:
    """An invoke that failed at or on the node, in the reference's shape."""
    details = {"nodeError": {"code": node_code, "message": message},
               "nodeCommandDispatched": dispatched}
    if code is not None:
        details = {"code": code, **details}
    return GatewayError(ErrorCode.UNAVAILABLE, headline or f"{node_code}: {message}", details=details)


def not_allowed(reason: str, command: str, why: str) -> GatewayError:
    return GatewayError(ErrorCode.INVALID_REQUEST, f"node command not allowed: {why}",
                        details={"reason": reason, "command": command})


PAIRING_CHANGED = GatewayError(ErrorCode.UNAVAILABLE, "node pairing changed while invocation was active",
                               details={"code": "PAIRING_CHANGED"}, retryable=True)


class NodeRouter:
    def __init__(self, hub, store: NodeStore) -> None:
        self.hub = hub
        self.store = store
        self.connected: dict[str, object] = {}   # node id -> Connection
        self.invokes: dict[str, PendingInvoke] = {}
        # What connected nodes published (skills, plugin tools, runner inventory).
        self.catalogs: dict[str, dict] = {}

    # -- policy ----------------------------------------------------------------------------------
    def allowed(self, command: str) -> bool:
        cfg = self.hub.config
        if command in cfg.node_commands_deny:
            return False
        return command not in OPT_IN_COMMANDS or command in cfg.node_commands_allow

    def effective(self, record: NodeRecord) -> list[str]:
        """Commands this node may be invoked for right now."""
        approved = set(record.approved)
        return sorted(c for c in record.declared if c in approved and self.allowed(c))

    # -- connection lifecycle --------------------------------------------------------------------
    def node_connected(self, conn, params) -> None:
        now = self.hub.clock_ms()
        node_id = conn.device.id
        record = self.store.get(node_id) or NodeRecord(node_id)
        client = params.client
        declared = list(params.commands) if params.commands is not UNSET else []
        record.declared = sorted(set(declared))
        record.caps = sorted(set(params.caps))
        record.permissions = dict(params.permissions) if params.permissions is not UNSET else {}
        record.display_name = record.display_name or (client.display_name or None)
        record.platform = client.platform
        record.version = client.version
        record.device_family = client.device_family or None
        record.last_seen_at = now
        record.last_seen_reason = "connect"
        self.store.save(record)
        # A second connection of the same node is accepted (the first is not closed, as
        # upstream); invokes go to the newest.
        self.connected[node_id] = conn
        self.catalogs[node_id] = {"connectedAtMs": now,
                                  "pathEnv": params.path_env if params.path_env is not UNSET else ""}
        wanted = [c for c in record.declared if self.allowed(c)]
        if not set(wanted) <= set(record.approved):
            request, created = self.store.add_request(node_id, wanted, record.caps, now)
            if created:
                self.hub.broadcast("node.pair.requested", self.request_entry(request, record))

    def node_disconnected(self, conn) -> None:
        node_id = conn.device.id
        if self.connected.get(node_id) is conn:
            del self.connected[node_id]
            self.catalogs.pop(node_id, None)
            record = self.store.get(node_id)
            if record is not None:
                record.last_seen_at = self.hub.clock_ms()
                record.last_seen_reason = "disconnect"
                self.store.save(record)
        for pending in [p for p in self.invokes.values() if p.node_conn is conn]:
            if not pending.future.done():
                pending.future.set_exception(node_error(
                    "DISCONNECTED", f"node disconnected ({pending.command})", True))

    # -- invocation ------------------------------------------------------------------------------
    def check_invocable(self, node_id: str, command: str):
        record = self.store.get(node_id)
        conn = self.connected.get(node_id)
        if record is None or not record.approved_at:
            # Unknown, or no approved surface yet (or it was rejected): as upstream, one
            # retryable answer for all of these.
            raise PAIRING_CHANGED
        if command in self.hub.config.node_commands_deny:
            raise not_allowed("command not allowlisted", command,
                              f'"{command}" is blocked by --node-commands-deny')
        if not self.allowed(command):
            raise not_allowed("command not allowlisted", command,
                              f'"{command}" requires explicit --node-commands-allow opt-in')
        if command not in record.declared:
            raise not_allowed("command not declared by node", command,
                              f'the node does not support "{command}"')
        if command not in record.approved:
            raise not_allowed("command not approved", command,
                              "the node's declared command surface is pending approval; run "
                              "`krabfast nodes pending`, then `krabfast nodes approve <requestId>`")
        if conn is None:
            raise node_error("NOT_CONNECTED", "node not connected", False, code="NOT_CONNECTED",
                             headline="node not connected")
        return conn

    async def invoke(self, params) -> NodeInvokeResult:
        conn = self.check_invocable(params.node_id, params.command)
        loop = asyncio.get_running_loop()
        invoke_id = str(uuid.uuid4())
        pending = PendingInvoke(invoke_id, params.node_id, params.command, loop.create_future(), conn)
        self.invokes[invoke_id] = pending
        timeout_ms = params.timeout_ms if params.timeout_ms is not UNSET else DEFAULT_INVOKE_TIMEOUT_MS
        request = NodeInvokeRequestEvent(
            id=invoke_id, node_id=params.node_id, command=params.command,
            params_json=msgspec.json.encode(params.params).decode() if params.params is not UNSET
            else UNSET, timeout_ms=timeout_ms, idempotency_key=params.idempotency_key)
        try:
            conn.send_event("node.invoke.request", request)
            try:
                # timeoutMs 0 means no deadline, as upstream.
                outcome = await asyncio.wait_for(pending.future, timeout_ms / 1000 or None)
            except asyncio.TimeoutError:
                conn.send_event("node.invoke.cancel", {"invokeId": invoke_id, "nodeId": params.node_id})
                raise node_error("TIMEOUT", "node invoke timed out", True) from None
            except asyncio.CancelledError:  # the caller went away, or the gateway stops
                conn.send_event("node.invoke.cancel", {"invokeId": invoke_id, "nodeId": params.node_id})
                raise
        finally:
            self.invokes.pop(invoke_id, None)
        return outcome

    def invoke_result(self, call, params) -> dict:
        if params.node_id != call.device.id:
            raise invalid_request("nodeId mismatch")
        pending = self.invokes.get(params.id)
        if pending is None or pending.future.done():
            return {"ok": True, "ignored": True}  # late (timed out) or unknown: nothing waits
        if pending.node_conn_id != call.conn_id:
            return {"ok": True, "ignored": True}  # not this node's invoke: nothing waits on it
        if params.ok:
            payload = params.payload
            payload_json = params.payload_json
            if payload is UNSET and payload_json is not UNSET:
                try:
                    payload = msgspec.json.decode(payload_json)
                except msgspec.DecodeError:
                    payload = {"payloadJSON": payload_json}
            if payload_json is UNSET and payload is not UNSET:
                payload_json = msgspec.json.encode(payload).decode()
            pending.future.set_result(NodeInvokeResult(
                ok=True, node_id=pending.node_id, command=pending.command, payload=payload,
                payload_json=payload_json))
        else:
            error = params.error
            if error is UNSET or error.code is UNSET:
                failure = GatewayError(ErrorCode.UNAVAILABLE, "node invoke failed",
                                       details={"nodeError": None, "nodeCommandDispatched": True})
            else:
                message = error.message if error.message is not UNSET else "node reported an error"
                failure = node_error(error.code, message, True)
            pending.future.set_exception(failure)
        return {"ok": True}

    # -- rendering -------------------------------------------------------------------------------
    def request_entry(self, request, record: NodeRecord | None = None) -> dict:
        record = record or self.store.get(request.node_id)
        # Keys in the reference's order.
        entry = {"requestId": request.request_id, "nodeId": request.node_id}
        if record is not None:
            for key, value in (("displayName", record.display_name), ("platform", record.platform),
                               ("version", record.version)):
                if value:
                    entry[key] = value
        entry.update(caps=request.caps, commands=request.commands,
                     requiredApproveScopes=approve_scopes(request.commands), ts=request.created_at)
        return entry

    @staticmethod
    def approval_state(record: NodeRecord, pending) -> str:
        if pending is not None:
            return "pending-reapproval" if record.approved_at else "pending-approval"
        return "approved" if record.approved_at else "unapproved"

    def node_entry(self, record: NodeRecord) -> dict:
        """A node as node.list / node.describe show it (keys in the reference's order)."""
        conn = self.connected.get(record.node_id)
        live = self.catalogs.get(record.node_id, {})
        commands = self.effective(record) if conn is not None else sorted(
            c for c in record.approved if self.allowed(c))
        entry: dict = {"nodeId": record.node_id}
        for key, value in (("displayName", record.display_name), ("platform", record.platform),
                           ("version", record.version)):
            if value:
                entry[key] = value
        if conn is not None:
            entry["clientId"], entry["clientMode"] = conn.client.id, conn.client.mode
        if record.device_family:
            entry["deviceFamily"] = record.device_family
        entry["caps"] = record.caps if record.approved_at else []
        entry["commands"] = commands
        entry["sessionHost"] = False
        if record.host_stats:
            entry["hostStats"] = record.host_stats
        if conn is not None:
            entry["nodePluginTools"] = live.get("tools", [])
            if live.get("pathEnv"):
                entry["pathEnv"] = live["pathEnv"]
        if record.permissions:
            entry["permissions"] = record.permissions
        request = self.store.request_for(record.node_id)
        entry["approvalState"] = self.approval_state(record, request)
        if request is not None:
            entry["pendingRequestId"] = request.request_id
            entry["pendingDeclaredCaps"] = request.caps
            entry["pendingDeclaredCommands"] = request.commands
        if conn is not None and live.get("connectedAtMs"):
            entry["connectedAtMs"] = entry["lastConnectedAtMs"] = live["connectedAtMs"]
        if record.last_seen_at:
            entry["lastSeenAtMs"] = record.last_seen_at
            entry["lastSeenReason"] = record.last_seen_reason or "connect"
        if record.approved_at:
            entry["approvedAtMs"] = record.approved_at
        if live.get("skills"):
            entry["skills"] = live["skills"]
        entry["paired"] = True
        entry["connected"] = conn is not None
        return entry
