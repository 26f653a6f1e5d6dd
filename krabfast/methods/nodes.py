"""Node family: node.list/describe/rename, node.pair.*, node.invoke(.result/.progress), node.event."""

from __future__ import annotations

import msgspec
from msgspec import UNSET

from krabfast.protocol import nodes as nod
from krabfast.protocol.errors import invalid_request, missing_scope
from krabfast.protocol.methods import MethodTable
from krabfast.protocol.node_commands import approve_scopes
from krabfast.protocol.nodes import NodeEventResult
from krabfast.protocol.scopes import DYNAMIC_SCOPE, NODE_ROLE_SCOPE, PAIRING, READ, covers

table = MethodTable()


ALIVE_TRIGGERS = frozenset(("background", "silent_push", "bg_app_refresh", "significant_location",
                            "manual", "connect"))


def _nodes(call):
    return call.services.nodes


@table.method("node.list", nod.NodeListParams, nod.NodeListResult, READ,
              summary="connected and paired nodes")
def node_list(call, params):
    nodes = _nodes(call)
    records = sorted(nodes.store.list(), key=lambda r: (
        r.node_id not in nodes.connected, (r.display_name or r.node_id).lower(), r.node_id))
    return {"ts": call.services.clock_ms(), "nodes": [nodes.node_entry(r) for r in records]}


@table.method("node.describe", nod.NodeDescribeParams, nod.NodeDescribeResult, READ, summary="one node")
def node_describe(call, params):
    nodes = _nodes(call)
    record = nodes.store.get(params.node_id)
    if record is None:
        raise invalid_request("unknown nodeId")
    return {"ts": call.services.clock_ms(), **nodes.node_entry(record)}


@table.method("node.rename", nod.NodeRenameParams, nod.NodeRenameResult, PAIRING, durable=True,
              summary="set a node's name")
def node_rename(call, params):
    nodes = _nodes(call)
    record = nodes.store.get(params.node_id)
    name = params.display_name.strip()
    if record is None:
        raise invalid_request("unknown nodeId")
    if not name:
        raise invalid_request("displayName required")
    record.display_name = name
    nodes.store.save(record)
    return {"nodeId": record.node_id, "displayName": name}


@table.method("node.pair.list", nod.NodePairListParams, nod.NodePairListResult, PAIRING,
              summary="pending node command-surface requests and approved nodes")
def node_pair_list(call, params):
    nodes = _nodes(call)
    paired = [nodes.node_entry(r) for r in nodes.store.list() if r.approved_at]
    return {"pending": [nodes.request_entry(r) for r in nodes.store.requests()], "paired": paired}


def _request(call, request_id: str):
    request = next((r for r in _nodes(call).store.requests() if r.request_id == request_id), None)
    if request is None:
        raise invalid_request("unknown requestId")
    return request


@table.method("node.pair.approve", nod.NodePairApproveParams, nod.NodePairApproveResult, PAIRING,
              durable=True,
              summary="approve a node's declared commands (plus write, or admin for host commands)")
def node_pair_approve(call, params):
    nodes = _nodes(call)
    request = _request(call, params.request_id)
    required = approve_scopes(request.commands)
    for scope in required:
        if not covers(call.scopes, [scope]):
            raise missing_scope("node.pair.approve", scope, required)
    record = nodes.store.get(request.node_id)
    now = call.services.clock_ms()
    record.approved = sorted(set(request.commands))
    record.approved_at = now
    nodes.store.save(record)
    nodes.store.drop_request(request.request_id)
    call.services.bus.publish("node.pair.resolved", {"requestId": request.request_id,
                                              "nodeId": request.node_id, "decision": "approved",
                                              "ts": now})
    return {"requestId": request.request_id, "node": nodes.node_entry(record)}


@table.method("node.pair.reject", nod.NodePairRejectParams, nod.NodePairRejectResult, PAIRING,
              durable=True,
              summary="reject a node's command-surface request")
def node_pair_reject(call, params):
    nodes = _nodes(call)
    request = _request(call, params.request_id)
    nodes.store.drop_request(request.request_id)
    call.services.bus.publish("node.pair.resolved", {"requestId": request.request_id,
                                              "nodeId": request.node_id, "decision": "rejected",
                                              "ts": call.services.clock_ms()})
    return {"requestId": request.request_id, "nodeId": request.node_id}


@table.method("node.pair.remove", nod.NodePairRemoveParams, nod.NodePairRemoveResult, PAIRING,
              durable=True,
              summary="forget a node (its socket closes)")
def node_pair_remove(call, params):
    nodes = _nodes(call)
    if not nodes.store.remove(params.node_id):
        raise invalid_request("unknown nodeId")
    conn = nodes.connected.get(params.node_id)
    if conn is not None:
        conn.close(4001, "device removed")
    call.services.bus.publish("node.pair.resolved", {"requestId": "", "nodeId": params.node_id,
                                              "decision": "removed", "ts": call.services.clock_ms()})
    return {"nodeId": params.node_id}


def _catalog_update(call, kind: str, items) -> dict:
    """A connected node publishes its whole catalog of `kind`; it is kept while the node
    is connected and shown by node.describe."""
    items = list(items)
    _nodes(call).catalogs.setdefault(call.device.id, {})[kind] = items
    return {"nodeId": call.device.id, kind: items}


@table.method("node.skills.update", nod.NodeSkillsUpdateParams, nod.NodeSkillsUpdateResult, NODE_ROLE_SCOPE,
              summary="a node publishes its skills catalog")
def node_skills_update(call, params):
    return _catalog_update(call, "skills", params.skills)


@table.method("node.pluginTools.update", nod.NodePluginToolsUpdateParams, nod.NodePluginToolsUpdateResult, NODE_ROLE_SCOPE,
              summary="a node publishes its plugin tool descriptors")
def node_plugin_tools_update(call, params):
    return _catalog_update(call, "tools", params.tools)


@table.method("node.runnerInventory.update", nod.NodeRunnerInventoryUpdateParams, nod.NodeRunnerInventoryUpdateResult,
              NODE_ROLE_SCOPE, summary="a node reports its worker-runner inventory")
def node_runner_inventory_update(call, params):
    _nodes(call).catalogs.setdefault(call.device.id, {})["runnerInventory"] = \
        msgspec.to_builtins(params)
    return {"nodeId": call.device.id}


@table.method("node.invoke", nod.NodeInvokeParams, nod.NodeInvokeResult, DYNAMIC_SCOPE,
              idempotent=True, summary="run an approved command on a connected node",
              scope_for=nod.invoke_scope)
async def node_invoke(call, params):
    # The command-dependent scope is checked before dispatch (MethodSpec.scope_for).
    return await _nodes(call).invoke(params)


@table.method("node.invoke.result", nod.NodeInvokeResultParams, nod.NodeInvokeResultResult,
              NODE_ROLE_SCOPE,
              summary="a node answers an invoke")
def node_invoke_result(call, params):
    return _nodes(call).invoke_result(call, params)


@table.method("node.invoke.progress", nod.NodeInvokeProgressParams, nod.NodeInvokeResultResult,
              NODE_ROLE_SCOPE, summary="a node reports progress on an invoke")
def node_invoke_progress(call, params):
    nodes = _nodes(call)
    pending = nodes.invokes.get(params.invoke_id)
    if pending is None or pending.node_conn_id != call.conn_id:
        raise invalid_request(f"unknown invoke id: {params.invoke_id}")
    # As the reference with no plugin stream consumer attached: accepted, not forwarded.
    return {"ok": True, "ignored": True}


@table.method("node.event", nod.NodeEventParams, nod.NodeEventResult, NODE_ROLE_SCOPE,
              summary="a node reports an event (host stats, presence)")
def node_event(call, params):
    nodes = _nodes(call)
    payload = params.payload
    if payload is UNSET and params.payload_json is not UNSET:
        try:
            payload = msgspec.json.decode(params.payload_json)
        except msgspec.DecodeError:
            raise invalid_request("node.event payloadJSON is not valid JSON") from None
    node_id = call.device.id
    if params.event == "node.host.stats":
        if not isinstance(payload, dict):
            raise invalid_request("node.host.stats payload must be an object")
        record = nodes.store.get(node_id)
        record.host_stats = dict(payload, updatedAtMs=call.services.clock_ms())
        nodes.store.save(record)
        return NodeEventResult(ok=True, event=params.event, handled=True)
    if params.event == "node.presence.alive":
        record = nodes.store.get(node_id)
        trigger = payload.get("trigger") if isinstance(payload, dict) else None
        record.last_seen_at = call.services.clock_ms()
        record.last_seen_reason = trigger if trigger in ALIVE_TRIGGERS else "background"
        nodes.store.save(record)
        return NodeEventResult(ok=True, event=params.event, handled=True)
    return NodeEventResult(ok=True, event=params.event, handled=False, reason="unsupported_event")

