"""Node family: node.list/describe/rename, node.pair.*, node.invoke(.result/.progress), node.event."""

from __future__ import annotations

import msgspec
from msgspec import UNSET

from krabfast.gateway.nodes import approve_scopes
from krabfast.gateway.pairing import covers
from krabfast.protocol.errors import invalid_request, missing_scope
from krabfast.protocol.nodes import NodeEventResult


ALIVE_TRIGGERS = frozenset(("background", "silent_push", "bg_app_refresh", "significant_location",
                            "manual", "connect"))


def _nodes(call):
    return call.hub.nodes


def node_list(call, params):
    nodes = _nodes(call)
    records = sorted(nodes.store.list(), key=lambda r: (
        r.node_id not in nodes.connected, (r.display_name or r.node_id).lower(), r.node_id))
    return {"ts": call.hub.clock_ms(), "nodes": [nodes.node_entry(r) for r in records]}


def node_describe(call, params):
    nodes = _nodes(call)
    record = nodes.store.get(params.node_id)
    if record is None:
        raise invalid_request("unknown nodeId")
    return {"ts": call.hub.clock_ms(), **nodes.node_entry(record)}


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


def node_pair_list(call, params):
    nodes = _nodes(call)
    paired = [nodes.node_entry(r) for r in nodes.store.list() if r.approved_at]
    return {"pending": [nodes.request_entry(r) for r in nodes.store.requests()], "paired": paired}


def _request(call, request_id: str):
    request = next((r for r in _nodes(call).store.requests() if r.request_id == request_id), None)
    if request is None:
        raise invalid_request("unknown requestId")
    return request


def node_pair_approve(call, params):
    nodes = _nodes(call)
    request = _request(call, params.request_id)
    required = approve_scopes(request.commands)
    for scope in required:
        if not covers(call.scopes, [scope]):
            raise missing_scope("node.pair.approve", scope, required)
    record = nodes.store.get(request.node_id)
    now = call.hub.clock_ms()
    record.approved = sorted(set(request.commands))
    record.approved_at = now
    nodes.store.save(record)
    nodes.store.drop_request(request.request_id)
    call.hub.broadcast("node.pair.resolved", {"requestId": request.request_id,
                                              "nodeId": request.node_id, "decision": "approved",
                                              "ts": now})
    return {"requestId": request.request_id, "node": nodes.node_entry(record)}


def node_pair_reject(call, params):
    nodes = _nodes(call)
    request = _request(call, params.request_id)
    nodes.store.drop_request(request.request_id)
    call.hub.broadcast("node.pair.resolved", {"requestId": request.request_id,
                                              "nodeId": request.node_id, "decision": "rejected",
                                              "ts": call.hub.clock_ms()})
    return {"requestId": request.request_id, "nodeId": request.node_id}


def node_pair_remove(call, params):
    nodes = _nodes(call)
    if not nodes.store.remove(params.node_id):
        raise invalid_request("unknown nodeId")
    conn = nodes.connected.get(params.node_id)
    if conn is not None:
        conn.close(4001, "device removed")
    call.hub.broadcast("node.pair.resolved", {"requestId": "", "nodeId": params.node_id,
                                              "decision": "removed", "ts": call.hub.clock_ms()})
    return {"nodeId": params.node_id}


def node_catalog_update(kind: str):
    """node.skills.update / node.pluginTools.update: a connected node publishes its whole
    catalog; it is kept while the node is connected and shown by node.describe."""
    def handler(call, params):
        items = list(getattr(params, kind))
        _nodes(call).catalogs.setdefault(call.device.id, {})[kind] = items
        return {"nodeId": call.device.id, kind: items}
    return handler


def node_runner_inventory_update(call, params):
    _nodes(call).catalogs.setdefault(call.device.id, {})["runnerInventory"] = \
        msgspec.to_builtins(params)
    return {"nodeId": call.device.id}


async def node_invoke(call, params):
    # The command-dependent scope is checked before dispatch (MethodSpec.scope_for).
    return await _nodes(call).invoke(params)


def node_invoke_result(call, params):
    return _nodes(call).invoke_result(call, params)


def node_invoke_progress(call, params):
    nodes = _nodes(call)
    pending = nodes.invokes.get(params.invoke_id)
    if pending is None or pending.node_conn is not call:
        raise invalid_request(f"unknown invoke id: {params.invoke_id}")
    return {"ok": True}


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
        record.host_stats = dict(payload, updatedAtMs=call.hub.clock_ms())
        nodes.store.save(record)
        return NodeEventResult(ok=True, event=params.event, handled=True)
    if params.event == "node.presence.alive":
        record = nodes.store.get(node_id)
        trigger = payload.get("trigger") if isinstance(payload, dict) else None
        record.last_seen_at = call.hub.clock_ms()
        record.last_seen_reason = trigger if trigger in ALIVE_TRIGGERS else "background"
        nodes.store.save(record)
        return NodeEventResult(ok=True, event=params.event, handled=True)
    return NodeEventResult(ok=True, event=params.event, handled=False, reason="unsupported_event")


HANDLERS = {
    "node.list": node_list,
    "node.describe": node_describe,
    "node.rename": node_rename,
    "node.pair.list": node_pair_list,
    "node.pair.approve": node_pair_approve,
    "node.pair.reject": node_pair_reject,
    "node.pair.remove": node_pair_remove,
    "node.invoke": node_invoke,
    "node.invoke.result": node_invoke_result,
    "node.invoke.progress": node_invoke_progress,
    "node.event": node_event,
    "node.skills.update": node_catalog_update("skills"),
    "node.pluginTools.update": node_catalog_update("tools"),
    "node.runnerInventory.update": node_runner_inventory_update,
}
