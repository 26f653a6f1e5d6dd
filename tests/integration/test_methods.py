"""After the handshake: dispatch, validation, scopes, idempotency, payload shapes, limits."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from picows import WSMsgType

from krabfast.client import RequestError
from tests.integration.helpers import RawWS, gateway_client, run

MAX_PAYLOAD = 26214400


def test_unknown_method(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        res = await ws.call("no.such.method", {})
        assert res["error"] == {"code": "INVALID_REQUEST", "message": "unknown method: no.such.method"}
        assert (await ws.call("system.echo", {"text": "after"}))["payload"] == {"ok": True, "text": "after"}
        await ws.close()
        # Without operator.admin the reference answers FORBIDDEN (unclassified methods are
        # admin-only), for a second `connect` too; the socket stays open.
        ro = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.read"])
        for method in ("no.such.method", "connect"):
            err = (await ro.call(method, {}))["error"]
            assert err == {"code": "FORBIDDEN", "message": "missing scope: operator.admin",
                           "details": {"code": "MISSING_SCOPE", "missingScope": "operator.admin",
                                       "requiredScopes": ["operator.admin"]}}
        assert (await ro.call("system.echo", {"text": "still"}))["ok"]
        await ro.close()
    run(body())


def test_second_connect_is_refused_but_socket_stays(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        res = await ws.call("connect", {})
        assert res["error"] == {"code": "INVALID_REQUEST",
                                "message": "connect is only valid as the first request"}
        assert (await ws.call("system.echo", {"text": "x"}))["ok"]
        await ws.close()
    run(body())


@pytest.mark.parametrize("params,needle", [
    ({"text": 42}, "`$.params.text`"),
    ({}, "`text`"),
    ({"text": ""}, "`$.params.text`"),
    ({"text": "x", "bogus": 1}, "bogus"),
    ([1], "`$.params`"),
    ({"text": "x", "idempotencyKey": ""}, "`$.params.idempotencyKey`"),
], ids=["text-type", "missing-text", "empty-text", "extra-key", "not-object", "empty-idem-key"])
def test_bad_params_name_the_json_path_and_change_nothing(gw, params, needle):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        before = (await ws.call("status"))["payload"]
        res = await ws.call("system-event", params)
        err = res["error"]
        assert err["code"] == "INVALID_REQUEST"
        assert err["message"].startswith("invalid system-event params")
        assert needle in err["message"], err["message"]
        after = (await ws.call("status"))["payload"]
        assert after["queuedSystemEvents"] == before["queuedSystemEvents"]
        assert after["gateway"]["stateVersion"] == before["gateway"]["stateVersion"]
        await ws.close()
    run(body())


def test_missing_scope_is_forbidden(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.read"])
        before = (await ws.call("status"))["payload"]
        res = await ws.call("system-event", {"text": "not allowed " + uuid.uuid4().hex})
        assert res["error"] == {"code": "FORBIDDEN", "message": "missing scope: operator.admin",
                                "details": {"code": "MISSING_SCOPE", "missingScope": "operator.admin",
                                            "requiredScopes": ["operator.admin"]}}
        # The scope check comes before params validation.
        res = await ws.call("system-event", {})
        assert res["error"]["details"]["code"] == "MISSING_SCOPE"
        after = (await ws.call("status"))["payload"]
        assert after["queuedSystemEvents"] == before["queuedSystemEvents"]
        assert after["gateway"]["stateVersion"]["presence"] == before["gateway"]["stateVersion"]["presence"]
        await ws.close()

        blind = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=[])
        for method in ("status", "system-presence", "system.echo"):
            res = await blind.call(method, {"text": "x"} if method == "system.echo" else None)
            assert res["error"]["details"] == {"code": "MISSING_SCOPE", "missingScope": "operator.read",
                                               "requiredScopes": ["operator.read"]}, method
        assert (await blind.call("health"))["ok"]  # health is open to every socket (reference)
        await blind.close()
        writer = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.write"])
        assert (await writer.call("health"))["ok"]  # write implies read
        await writer.close()
    run(body())


def test_idempotent_retry(gw):
    async def body():
        watcher = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.read"])
        inst = uuid.uuid4().hex
        a = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.admin"],
                                  instance_id=inst)
        # The same client instance on a second socket is the same caller.
        b = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.admin"],
                                  instance_id=inst)
        text = "deploy " + uuid.uuid4().hex
        params = {"text": text, "idempotencyKey": "idem-" + uuid.uuid4().hex}
        v0 = (await a.call("status"))["payload"]["gateway"]["stateVersion"]["presence"]
        first = await a.call("system-event", params)
        again = await a.call("system-event", params)
        other = await b.call("system-event", params)
        assert first["ok"] and first["payload"] == {"ok": True}
        assert again["payload"] == first["payload"] and other["payload"] == first["payload"]
        await watcher.barrier()
        seen = [e for e in watcher.events("presence")
                if any(p.get("text") == text for p in e["payload"]["presence"])]
        assert len(seen) == 1, seen
        assert seen[0]["stateVersion"]["presence"] == v0 + 1
        status = (await watcher.call("status"))["payload"]
        assert status["queuedSystemEvents"].count(text) == 1
        assert status["gateway"]["stateVersion"]["presence"] == v0 + 1
        rows = (await watcher.call("system-presence"))["payload"]
        assert [r.get("text") for r in rows].count(text) == 1
        # A different key runs again.
        params2 = dict(params, idempotencyKey="idem-" + uuid.uuid4().hex)
        assert (await a.call("system-event", params2))["ok"]
        status = (await watcher.call("status"))["payload"]
        assert status["queuedSystemEvents"].count(text) == 2
        assert status["gateway"]["stateVersion"]["presence"] == v0 + 2
        for ws in (watcher, a, b):
            await ws.close()
    run(body())


def test_system_echo(gw):
    async def body():
        async with gateway_client(gw.url, client_id="cli", mode="cli", scopes=["operator.read"]) as c:
            assert await c.request("system.echo", {"text": "ping"}) == {"ok": True, "text": "ping"}
            text = "krab 🦀 ünïcode \u2028 \"quoted\" \\ " + "x" * 1000
            assert await c.request("system.echo", {"text": text}) == {"ok": True, "text": text}
            assert await c.request("system.echo", {"text": ""}) == {"ok": True, "text": ""}
            with pytest.raises(RequestError) as info:
                await c.request("system.echo", {})
            assert info.value.code == "INVALID_REQUEST"
    run(body())


def test_health_shape(gw):
    async def body():
        async with gateway_client(gw.url, client_id="cli", mode="cli", scopes=["operator.read"]) as c:
            health = await c.request("health")  # schema-checked as reference `health` by on_frame
            assert health["ok"] is True
            assert abs(health["ts"] - time.time() * 1000) < 120_000
            assert isinstance(health["durationMs"], int)
            assert health["eventLoop"]["degraded"] in (True, False)
            assert health == await c.request("health", {})  # params are ignored
    run(body())


def test_status_shape(gw):
    async def body():
        async with gateway_client(gw.url, client_id="cli", mode="cli", scopes=["operator.read"]) as c:
            status = await c.request("status")
            # Top-level keys the reference's status also has, with the same types.
            assert isinstance(status["runtimeVersion"], str) and status["runtimeVersion"]
            assert isinstance(status["channelSummary"], list)
            assert isinstance(status["queuedSystemEvents"], list)
            assert all(isinstance(t, str) for t in status["queuedSystemEvents"])
            assert {"paths", "count", "recent"} <= set(status["sessions"])
            assert isinstance(status["processMemory"]["rssBytes"], int)
            assert status["processMemory"]["rssBytes"] > 1_000_000
            assert status["pid"] == gw.process.pid
            assert "degraded" in status["eventLoop"]
            assert status["gateway"]["connections"] >= 1
            assert status["gateway"]["port"] == gw.port
    run(body())


def test_system_presence_shape(gw):
    async def body():
        async with gateway_client(gw.url, client_id="cli", mode="cli", scopes=["operator.read"]) as c:
            rows = await c.request("system-presence")  # each row checked as PresenceEntry
            assert isinstance(rows, list) and rows
            me = rows[0]
            assert me["reason"] == "self" and me["mode"] == "gateway"
            assert me["text"].startswith("Gateway: ")
            assert abs(me["ts"] - time.time() * 1000) < 5000  # refreshed on every listing
            ts = [r["ts"] for r in rows]
            assert ts == sorted(ts, reverse=True)
            # The CLI connection is ephemeral: it has no row.
            assert not any(r.get("instanceId") == c.instance_id for r in rows)
    run(body())


def test_malformed_frames_after_handshake_are_answered_and_socket_stays(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        ws.send(b'{"type":"req","id":"x1","method":"health","bogus":1}')
        ws.send(b'{"type":"req","method":"health"}')
        ws.send(b"[1, 2]")
        ws.send(b'{"type":"event","event":"tick"}')
        ws.send(b'{"type":"res","id":"r9","ok":true}')
        ws.send({"type": "req", "id": "tp", "method": "health", "traceparent": "x" * 129})
        ws.send(b"not json")  # nothing to correlate: dropped
        ws.send(b'{"type":"req","id":"b1","method":"system.echo","params":{"text":"bin"}}',
                WSMsgType.BINARY)
        ws.methods["b1"] = "system.echo"
        assert (await ws.response("b1"))["payload"] == {"ok": True, "text": "bin"}
        x1 = await ws.response("x1")
        assert x1["error"]["code"] == "INVALID_REQUEST" and "bogus" in x1["error"]["message"]
        for _ in range(3):
            assert (await ws.response("invalid"))["error"]["code"] == "INVALID_REQUEST"
        assert (await ws.response("r9"))["error"]["code"] == "INVALID_REQUEST"
        tp = await ws.response("tp")
        assert "`$.traceparent`" in tp["error"]["message"]
        assert (await ws.call("system.echo", {"text": "alive"}))["ok"]
        assert len([f for f in ws.frames if f.get("type") == "res"]) == 9  # connect + 7 + echo
        # Invalid UTF-8 is fatal, as before the handshake.
        ws.send(b'{"type":"req","id":"u","method":"h\xffalth"}')
        await ws.wait_closed()
        assert ws.close_code == 1007
    run(body())


def test_many_pipelined_requests(gw):
    async def body():
        async with gateway_client(gw.url, client_id="cli", mode="cli", scopes=["operator.read"]) as c:
            results = await asyncio.gather(*(c.request("system.echo", {"text": f"n{i}"})
                                             for i in range(300)))
            assert results == [{"ok": True, "text": f"n{i}"} for i in range(300)]
    run(body())


def test_frame_of_exactly_max_payload_is_accepted(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        head, tail = b'{"type":"req","id":"big","method":"system.echo","params":{"text":"', b'"}}'
        ws.methods["big"] = "system.echo"
        ws.send(head + b"y" * (MAX_PAYLOAD - len(head) - len(tail)) + tail)
        res = await ws.response("big", timeout=20)
        assert res["ok"] and len(res["payload"]["text"]) == MAX_PAYLOAD - len(head) - len(tail)
        await ws.close()
    run(body())


def test_frame_over_max_payload_closes_1009(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        assert ws.hello["policy"]["maxPayload"] == MAX_PAYLOAD
        ws.send(b"x" * (MAX_PAYLOAD + 1))
        await ws.wait_closed(20)
        assert ws.close_code == 1009
    run(body())
