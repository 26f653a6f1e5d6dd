"""Nodes through the state machine: connect, command-surface approval, invoke round trip."""

from __future__ import annotations

import asyncio
import json

import pytest

from krabfast.gateway.config import GatewayConfig
from tests.devicekeys import DeviceKey
from tests.unit.conftest import Harness

COMMANDS = ["system.which", "file.stat", "camera.snap"]


def _harness(**kw) -> Harness:
    return Harness(GatewayConfig(auth_mode="token", token="T", state_dir=":memory:", **kw))


def _node(h: Harness, key: DeviceKey, commands=COMMANDS, protocol=4):
    conn, sink = h.open()
    challenge = sink.frames()[0]["payload"]
    params = {"minProtocol": protocol, "maxProtocol": protocol,
              "client": {"id": "node-host", "version": "1.0.0", "platform": "linux", "mode": "node",
                         "displayName": "build-box"},
              "role": "node", "scopes": [], "caps": ["system"], "commands": commands,
              "auth": {"token": "T"}}
    key.sign_into(params, challenge, "T")
    conn.receive(json.dumps({"type": "req", "id": "c1", "method": "connect", "params": params}).encode())
    res = sink.response("c1")
    assert res["ok"], res
    return conn, sink


def _admin(h: Harness, scopes=("operator.admin",)):
    return h.connected(client_id="gateway-client", mode="backend", token="T", instance_id="adm",
                       scopes=list(scopes))


def _approve_pending(h, admin, admin_sink, req_id="ap"):
    pending = h.request(admin, admin_sink, "node.pair.list", {}, req_id=req_id + "l")["payload"]["pending"]
    request_id = pending[0]["requestId"]
    return h.request(admin, admin_sink, "node.pair.approve", {"requestId": request_id}, req_id=req_id)


def test_node_connects_and_waits_for_surface_approval():
    h = _harness()
    admin, admin_sink = _admin(h)
    key = DeviceKey()
    node, node_sink = _node(h, key)
    hello = node_sink.response("c1")["payload"]
    assert hello["auth"]["role"] == "node" and hello["auth"]["deviceToken"]
    requested = admin_sink.events("node.pair.requested")[-1]["payload"]
    assert requested["nodeId"] == key.id and "camera.snap" not in requested["commands"]
    assert requested["requiredApproveScopes"] == ["operator.pairing", "operator.admin"]
    listed = h.request(admin, admin_sink, "node.list", {}, req_id="l1")["payload"]["nodes"]
    assert listed[0]["connected"] is True and listed[0]["commands"] == []  # nothing approved yet
    approved = _approve_pending(h, admin, admin_sink)["payload"]
    assert approved["node"]["commands"] == ["file.stat", "system.which"]  # camera.snap: opt-in only
    assert admin_sink.events("node.pair.resolved")[-1]["payload"]["decision"] == "approved"


def test_approving_host_commands_needs_admin():
    h = _harness()
    pairer, sink = _admin(h, scopes=("operator.pairing", "operator.write"))
    _node(h, DeviceKey())
    err = _approve_pending(h, pairer, sink)["error"]
    assert err["code"] == "FORBIDDEN" and err["details"]["missingScope"] == "operator.admin"


def _invoke(h, admin, admin_sink, node_sink, answer, params, req_id="i1"):
    """Run node.invoke (an async handler) while the node answers its request."""
    admin_sink.methods[req_id] = "node.invoke"
    admin.receive(json.dumps({"type": "req", "id": req_id, "method": "node.invoke",
                              "params": params}).encode())
    if not admin_sink.deferred:
        return admin_sink.response(req_id)
    awaitable, done = admin_sink.deferred.pop()

    async def run():
        task = asyncio.ensure_future(awaitable)
        await asyncio.sleep(0)
        for _ in range(50):
            requests = node_sink.events("node.invoke.request")
            if requests or task.done():
                break
            await asyncio.sleep(0)
        if requests and answer is not None:
            answer(requests[-1]["payload"])
        try:
            done(await task, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the state machine like the adapter does
            done(None, exc)

    asyncio.run(run())
    return admin_sink.response(req_id)


def test_invoke_round_trip_and_errors():
    h = _harness()
    admin, admin_sink = _admin(h)
    key = DeviceKey()
    node, node_sink = _node(h, key)
    _approve_pending(h, admin, admin_sink)

    def answer(request):
        assert request["command"] == "system.which" and json.loads(request["paramsJSON"]) == {"bins": ["sh"]}
        node_sink.methods["r1"] = "node.invoke.result"
        node.receive(json.dumps({"type": "req", "id": "r1", "method": "node.invoke.result", "params": {
            "id": request["id"], "nodeId": key.id, "ok": True, "payload": {"bins": {"sh": "/bin/sh"}}}}).encode())

    res = _invoke(h, admin, admin_sink, node_sink, answer,
                  {"nodeId": key.id, "command": "system.which", "params": {"bins": ["sh"]},
                   "idempotencyKey": "k1"})
    assert res["payload"] == {"ok": True, "nodeId": key.id, "command": "system.which",
                              "payload": {"bins": {"sh": "/bin/sh"}},
                              "payloadJSON": '{"bins":{"sh":"/bin/sh"}}'}
    # An idempotent retry returns the first result without invoking the node again.
    before = len(node_sink.events("node.invoke.request"))
    again = _invoke(h, admin, admin_sink, node_sink, None,
                    {"nodeId": key.id, "command": "system.which", "params": {"bins": ["sh"]},
                     "idempotencyKey": "k1"}, req_id="i2")
    assert again["payload"] == res["payload"] and len(node_sink.events("node.invoke.request")) == before
    # Unknown node, unapproved command.
    unknown = _invoke(h, admin, admin_sink, node_sink, None,
                      {"nodeId": "nope", "command": "system.which", "idempotencyKey": "k2"}, req_id="i3")
    assert unknown["error"]["code"] == "UNAVAILABLE"
    assert unknown["error"]["details"] == {"code": "PAIRING_CHANGED"} and unknown["error"]["retryable"]
    blocked = _invoke(h, admin, admin_sink, node_sink, None,
                      {"nodeId": key.id, "command": "camera.snap", "idempotencyKey": "k3"}, req_id="i4")
    assert blocked["error"]["code"] == "INVALID_REQUEST"
    # Timeout.
    slow = _invoke(h, admin, admin_sink, node_sink, None,
                   {"nodeId": key.id, "command": "file.stat", "timeoutMs": 10, "idempotencyKey": "k4"},
                   req_id="i5")
    assert slow["error"]["code"] == "UNAVAILABLE" and "timed out" in slow["error"]["message"]


def test_node_disconnect_mid_call_and_result_from_wrong_node():
    h = _harness()
    admin, admin_sink = _admin(h)
    key = DeviceKey()
    node, node_sink = _node(h, key)
    _approve_pending(h, admin, admin_sink)
    other_key = DeviceKey()
    other, other_sink = _node(h, other_key, commands=[])

    def wrong_then_drop(request):
        other_sink.methods["w1"] = "node.invoke.result"
        other.receive(json.dumps({"type": "req", "id": "w1", "method": "node.invoke.result", "params": {
            "id": request["id"], "nodeId": other_key.id, "ok": True, "payload": {}}}).encode())
        # Another node answering is ignored (nothing waits on it there); the invoke goes on.
        assert other_sink.response("w1")["payload"] == {"ok": True, "ignored": True}
        node.transport_closed()

    res = _invoke(h, admin, admin_sink, node_sink, wrong_then_drop,
                  {"nodeId": key.id, "command": "file.stat", "idempotencyKey": "d1"})
    assert res["error"]["code"] == "UNAVAILABLE" and "disconnected" in res["error"]["message"]
    offline = _invoke(h, admin, admin_sink, node_sink, None,
                      {"nodeId": key.id, "command": "file.stat", "idempotencyKey": "d2"}, req_id="i2")
    assert offline["error"]["code"] == "UNAVAILABLE"
    listed = h.request(admin, admin_sink, "node.list", {}, req_id="l")["payload"]["nodes"]
    row = next(n for n in listed if n["nodeId"] == key.id)
    assert row["connected"] is False and row["lastSeenReason"] == "disconnect"


@pytest.mark.parametrize("event,handled", [("node.host.stats", True), ("node.presence.alive", True),
                                           ("something.else", False)])
def test_node_events(event, handled):
    h = _harness()
    node, sink = _node(h, DeviceKey())
    payload = {"cpuCount": 2} if event == "node.host.stats" else {"trigger": "manual"}
    res = h.request(node, sink, "node.event", {"event": event, "payload": payload})["payload"]
    assert res["handled"] is handled and res["event"] == event


def test_node_protocol_3_is_accepted():
    h = _harness()
    _, sink = _node(h, DeviceKey(), protocol=3)
    assert sink.response("c1")["payload"]["protocol"] == 3


def test_operator_cannot_call_node_methods():
    h = _harness()
    admin, sink = _admin(h)
    err = h.request(admin, sink, "node.event", {"event": "x"})["error"]
    assert err["message"] == "unauthorized role: operator"
