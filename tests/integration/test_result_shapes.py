"""Every answer a real gateway sends matches the result definition the exported schema names.

One `python -m krabfast gateway` is driven through realistic node states: a node pending
its first approval, approved and connected (host stats, skills, plugin tools, runner
inventory published), an invoke answered with progress, a late result that is `ignored`, a
rejected request, a re-approval request, an offline approved node and a removed one; plus
the system and device methods an admin can call on its own. Then each successful response is
validated against `build_schema(METHOD_SPECS)["methods"][method]["result"]` (Draft 7, the schema's own
definitions with every object definition closed, so a key the Struct lacks fails), and the
`node.pair.requested` / `node.pair.resolved` payloads against `events[name]["payload"]`.
"""

from __future__ import annotations

import asyncio
import copy
import json

import jsonschema

from krabfast.methods import METHOD_SPECS
from krabfast.protocol.jsonschema import build_schema
from tests.devicekeys import DeviceKey
from tests.integration.helpers import TOKEN, RawWS, connect_params, run
from tests.integration.node_helpers import admin_ws, approve, invoke_params, requested

NODE_METHODS = ("node.list", "node.describe", "node.rename", "node.pair.list", "node.pair.approve",
                "node.pair.reject", "node.pair.remove", "node.invoke", "node.invoke.result",
                "node.invoke.progress", "node.event", "node.skills.update",
                "node.pluginTools.update", "node.runnerInventory.update")
EVENTS = ("node.pair.requested", "node.pair.resolved")


def exported_schema() -> dict:
    """The schema `krabfast protocol gen` exports (from the served declarations)."""
    return build_schema(METHOD_SPECS)


def closed(definitions: dict) -> dict:
    """The definitions with every object definition that lists properties closed."""
    out = copy.deepcopy(definitions)
    for body in out.values():
        if body.get("type") == "object" and "properties" in body:
            body.setdefault("additionalProperties", False)
    return out


class Checker:
    def __init__(self, schema: dict) -> None:
        self.schema = schema
        self.definitions = closed(schema["definitions"])
        self.errors: list[str] = []
        self.checked: set[str] = set()

    def check(self, what: str, name: str | None, value) -> None:
        self.checked.add(what)
        if name is None:
            self.errors.append(f"{what}: the schema names no definition")
            return
        if name not in self.definitions:
            self.errors.append(f"{what}: the schema names {name!r}, which is not a definition")
            return
        validator = jsonschema.Draft7Validator({"$ref": f"#/definitions/{name}",
                                                "definitions": self.definitions})
        for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
            self.errors.append(f"{what} ({name}) at {list(error.absolute_path)}: {error.message}"
                               f"\n    {json.dumps(value)[:600]}")

    def responses(self, ws: RawWS) -> None:
        for frame in ws.frames:
            if frame.get("type") != "res" or frame.get("ok") is not True:
                continue
            method = ws.methods.get(frame.get("id"))
            if method in (None, "connect"):
                continue
            entry = self.schema["methods"].get(method, {})
            self.check(method, entry.get("result"), frame.get("payload"))

    def events(self, ws: RawWS, names) -> None:
        for frame in ws.events():
            if frame["event"] in names:
                entry = self.schema["events"].get(frame["event"], {})
                self.check(frame["event"], entry.get("payload"), frame.get("payload"))


async def node_socket(url: str, key: DeviceKey, commands: list[str], **extra) -> RawWS:
    """A raw socket connected as role node (signed device, shared token)."""
    ws = await RawWS.open(url)
    params = connect_params(client_id="node-host", mode="node", role="node", scopes=[],
                            commands=commands, display_name=extra.pop("display_name", None),
                            **extra)
    params["client"]["deviceFamily"] = "Linux"
    key.sign_into(params, ws.challenge, TOKEN)
    res = await ws.call("connect", params)
    assert res["ok"] is True, res
    return ws


async def device_socket(url: str, key: DeviceKey) -> RawWS:
    """A signed operator device on the shared token (paired silently on loopback)."""
    ws = await RawWS.open(url)
    params = connect_params(client_id="cli", mode="cli", scopes=["operator.read"])
    key.sign_into(params, ws.challenge, TOKEN)
    res = await ws.call("connect", params)
    assert res["ok"] is True, res
    return ws


async def ok(ws: RawWS, method: str, params=None, **kw) -> dict:
    res = await ws.call(method, params, **kw)
    assert res["ok"] is True, (method, res)
    return res["payload"]


async def drive(url: str) -> tuple[list[RawWS], RawWS]:
    admin = await admin_ws(url)
    sockets = [admin]

    # System methods.
    await ok(admin, "health")
    await ok(admin, "status", {})
    await ok(admin, "system-presence")
    await ok(admin, "system.echo", {"text": "hi"})
    await ok(admin, "system-event", {"text": "shapes", "idempotencyKey": "shapes-1"})

    # Node A waits for its first approval: listed with its pending request.
    a_key = DeviceKey()
    a = await node_socket(url, a_key, ["demo.echo", "demo.more"], display_name="node-a",
                          permissions={"x.y": True}, pathEnv="/usr/local/bin:/usr/bin:/bin")
    sockets.append(a)
    request_a = await requested(admin, a_key.id)
    rows = (await ok(admin, "node.list", {}))["nodes"]
    assert any(r["nodeId"] == a_key.id and r["approvalState"] == "pending-approval" for r in rows)
    await ok(admin, "node.describe", {"nodeId": a_key.id})
    await ok(admin, "node.pair.list", {})
    await approve(admin, request_a["requestId"])
    await admin.event("node.pair.resolved", pred=lambda f: f["payload"]["nodeId"] == a_key.id)

    # A publishes what a node host publishes after hello-ok.
    stats = {"cpuCount": 2, "loadAverage": [0.5, 0.4, 0.3], "memoryTotalBytes": 2000,
             "memoryFreeBytes": 1000, "diskTotalBytes": 10, "diskAvailableBytes": 5}
    await ok(a, "node.event", {"event": "node.host.stats", "payloadJSON": json.dumps(stats)})
    await ok(a, "node.event", {"event": "node.presence.alive", "payload": {"trigger": "manual"}})
    await ok(a, "node.event", {"event": "no.such.event", "payload": {}})
    await ok(a, "node.runnerInventory.update", {"protocolFeatures": ["node-worker-supervisor-v6"],
                                                "workerHost": {"enabled": False}})
    await ok(a, "node.skills.update", {"skills": [
        {"name": "demo-skill", "description": "a demo skill", "content": "# Demo\n"}]})
    await ok(a, "node.pluginTools.update", {"tools": [
        {"pluginId": "demo", "name": "demo_tool", "description": "a demo tool",
         "parameters": {"type": "object"}, "command": "demo.echo"}]})

    # An invoke answered (with progress first), then one answered too late: ignored.
    req_id = admin.request("node.invoke", invoke_params(a_key.id, "demo.echo", {"x": 1}))
    invoke = (await a.event("node.invoke.request"))["payload"]
    await ok(a, "node.invoke.progress", {"invokeId": invoke["id"], "nodeId": a_key.id, "seq": 0,
                                         "chunk": "working"})
    await ok(a, "node.invoke.result", {"id": invoke["id"], "nodeId": a_key.id, "ok": True,
                                       "payload": {"echo": {"x": 1}}})
    assert (await admin.response(req_id))["ok"] is True
    req_id = admin.request("node.invoke", invoke_params(a_key.id, "demo.echo", {},
                                                        timeout_ms=200))
    invoke = (await a.event("node.invoke.request"))["payload"]
    assert (await admin.response(req_id))["ok"] is False  # timed out
    late = await ok(a, "node.invoke.result", {"id": invoke["id"], "nodeId": a_key.id, "ok": True,
                                              "payloadJSON": "{}"})
    assert late == {"ok": True, "ignored": True}, late
    await ok(admin, "node.rename", {"nodeId": a_key.id, "displayName": "renamed-a"})
    row = await ok(admin, "node.describe", {"nodeId": a_key.id})
    assert {"hostStats", "nodePluginTools", "pathEnv", "permissions", "skills", "connectedAtMs",
            "lastSeenAtMs", "approvedAtMs"} <= set(row), row
    await ok(admin, "node.list", {})

    # B stays pending; C is rejected (then unapproved); A asks for more (pending-reapproval).
    b_key, c_key = DeviceKey(), DeviceKey()
    b = await node_socket(url, b_key, ["demo.echo"])
    c = await node_socket(url, c_key, ["demo.other"])
    sockets += [b, c]
    await requested(admin, b_key.id)
    request_c = await requested(admin, c_key.id)
    await ok(admin, "node.pair.reject", {"requestId": request_c["requestId"]})
    a2 = await node_socket(url, a_key, ["demo.echo", "demo.more", "demo.extra"],
                           display_name="node-a", permissions={"x.y": True})
    sockets.append(a2)
    await requested(admin, a_key.id)
    listed = await ok(admin, "node.list", {})
    states = {r["nodeId"]: r["approvalState"] for r in listed["nodes"]}
    assert states == {a_key.id: "pending-reapproval", b_key.id: "pending-approval",
                      c_key.id: "unapproved"}, states
    for node_id in (a_key.id, b_key.id, c_key.id):
        await ok(admin, "node.describe", {"nodeId": node_id})
    pairs = await ok(admin, "node.pair.list", {})
    assert len(pairs["pending"]) == 2 and [p["nodeId"] for p in pairs["paired"]] == [a_key.id]

    # A offline (approved: no live keys), then removed.
    for ws in (a, a2):
        await ws.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while (await ok(admin, "node.describe", {"nodeId": a_key.id}))["connected"]:
        assert loop.time() < deadline, "node A still connected"
        await asyncio.sleep(0.05)
    await ok(admin, "node.list", {})
    await ok(admin, "node.pair.list", {})
    await ok(admin, "node.pair.remove", {"nodeId": a_key.id})
    await admin.event("node.pair.resolved", pred=lambda f: f["payload"]["decision"] == "removed")

    # Device methods on a device of our own.
    d_key = DeviceKey()
    d = await device_socket(url, d_key)
    sockets.append(d)
    await ok(admin, "device.pair.list", {})
    await ok(admin, "device.pair.rename", {"deviceId": d_key.id, "label": "shapes"})
    await ok(admin, "device.token.rotate", {"deviceId": d_key.id, "role": "operator"})
    await ok(admin, "device.token.revoke", {"deviceId": d_key.id, "role": "operator"})
    await ok(admin, "device.pair.remove", {"deviceId": d_key.id})
    await admin.barrier()
    return sockets, admin


def test_every_result_matches_its_schema_definition(gateway_server):
    gw = gateway_server("--token", TOKEN)
    schema = exported_schema()
    checker = Checker(schema)

    async def body():
        sockets, admin = await drive(gw.url)
        for method in admin.hello["features"]["methods"]:
            if "result" not in schema["methods"].get(method, {}):
                checker.errors.append(f"{method}: served, but the schema gives it no result")
        for ws in sockets:
            checker.responses(ws)
        checker.events(admin, EVENTS)
        for ws in sockets:
            await ws.close()

    run(body(), timeout=40)
    unchecked = sorted(set(NODE_METHODS + EVENTS) - checker.checked)
    assert not unchecked, f"never answered successfully: {unchecked}"
    errors = list(dict.fromkeys(checker.errors))
    assert not errors, "answers not valid against their schema definition:\n" + "\n".join(errors)
