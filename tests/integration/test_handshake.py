"""Handshake against a real gateway process: challenge, hello-ok, every bad first frame,
pre-connect limits (64 KiB, UTF-8, timeout, 32 pending sockets per IP)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from picows import WSInvalidStatusError, WSMsgType

from tests.integration.helpers import TOKEN, RawWS, connect_params, run

REFERENCE_POLICY = {"maxPayload": 26214400, "maxBufferedBytes": 52428800, "tickIntervalMs": 30000}
SERVED = {"health", "status", "system-presence", "system-event", "system.echo", "device.pair.list",
          "device.pair.approve", "device.pair.reject", "device.pair.remove", "device.pair.rename",
          "device.token.rotate", "device.token.revoke", "node.list", "node.describe", "node.rename",
          "node.pair.list", "node.pair.approve", "node.pair.reject", "node.pair.remove", "node.invoke",
          "node.invoke.result", "node.invoke.progress", "node.event", "node.skills.update",
          "node.pluginTools.update", "node.runnerInventory.update",
          "chat.send", "chat.history", "chat.startup", "chat.message.get", "chat.abort",
          "chat.inject", "agent", "agent.wait", "agents.list", "agent.identity.get",
          "sessions.list", "sessions.subscribe", "sessions.messages.subscribe",
          "sessions.messages.unsubscribe", "sessions.describe", "sessions.resolve",
          "sessions.create", "sessions.patch", "sessions.reset", "sessions.delete",
          "sessions.abort", "models.list", "commands.list", "system.info"}


def _connect_frame(req_id: str = "c1", **kw) -> dict:
    return {"type": "req", "id": req_id, "method": "connect", "params": connect_params(**kw)}


async def _first_frame(url: str, raw) -> RawWS:
    """Open, send one bad first frame, wait for the server to close."""
    ws = await RawWS.open(url)
    ws.send(raw)
    await ws.wait_closed()
    assert ws.got_close_frame, "server dropped the socket without a close frame"
    return ws


def _responses(ws: RawWS) -> list[dict]:
    return [f for f in ws.frames if f.get("type") == "res"]


# -- challenge and hello --------------------------------------------------------------------------

def test_challenge_on_open(gw):
    async def body():
        a = await RawWS.open(gw.url)
        b = await RawWS.open(gw.url)
        now = time.time() * 1000
        for ws in (a, b):
            first = ws.frames[0]
            assert first["type"] == "event" and first["event"] == "connect.challenge"
            assert "seq" not in first
            assert isinstance(first["payload"]["nonce"], str) and len(first["payload"]["nonce"]) >= 16
            assert abs(first["payload"]["ts"] - now) < 5000
        assert a.challenge["nonce"] != b.challenge["nonce"]
        await a.close()
        await b.close()
    run(body())


def test_connect_gets_hello_ok(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.read"])
        hello = ws.hello
        assert hello["type"] == "hello-ok" and hello["protocol"] == 4
        assert isinstance(hello["server"]["version"], str) and hello["server"]["connId"]
        assert set(hello["features"]["methods"]) == SERVED
        assert {"tick", "presence", "health", "shutdown"} <= set(hello["features"]["events"])
        assert hello["auth"]["role"] == "operator" and hello["auth"]["scopes"] == ["operator.read"]
        assert hello["policy"] == REFERENCE_POLICY
        snap = hello["snapshot"]
        assert {"presence", "health", "stateVersion", "uptimeMs"} <= set(snap)
        assert snap["presence"][0]["reason"] == "self"
        assert ws.close_code is None and not ws.disconnected.is_set()
        await ws.close()
    run(body())


def test_every_advertised_method_is_served(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        for method in ws.hello["features"]["methods"]:
            res = await ws.call(method, {})
            if not res["ok"]:
                assert "unknown method" not in res["error"]["message"], res
        await ws.close()
    run(body())


def test_pipelined_connect_and_requests_are_answered_in_order(gw):
    async def body():
        ws = await RawWS.open(gw.url)
        ws.send(_connect_frame(client_id="cli", mode="cli"))
        for i in range(5):
            ws.request("system.echo", {"text": str(i)}, req_id=f"e{i}")
        assert (await ws.response("c1"))["ok"]
        for i in range(5):
            assert (await ws.response(f"e{i}"))["payload"] == {"ok": True, "text": str(i)}
        ids = [f["id"] for f in _responses(ws)]
        assert ids == ["c1"] + [f"e{i}" for i in range(5)]
        await ws.close()
    run(body())


@pytest.mark.parametrize("how", ["binary", "fragmented"])
def test_connect_in_binary_or_fragmented_frames(gw, how):
    async def body():
        ws = await RawWS.open(gw.url)
        data = json.dumps(_connect_frame(client_id="cli", mode="cli")).encode()
        ws.methods["c1"] = "connect"
        if how == "binary":  # the reference decodes binary frames as UTF-8 JSON
            ws.send(data, WSMsgType.BINARY)
        else:
            ws.transport.send(WSMsgType.TEXT, data[:20], fin=False)
            ws.transport.send(WSMsgType.CONTINUATION, data[20:60], fin=False)
            ws.transport.send(WSMsgType.CONTINUATION, data[60:], fin=True)
        assert (await ws.response("c1"))["ok"]
        assert (await ws.call("system.echo", {"text": "x"}))["ok"]
        await ws.close()
    run(body())


# -- bad first frames -----------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"hello there", b"", b"{"], ids=["text", "empty", "truncated"])
def test_non_json_first_frame_closes_1000(gw, raw):
    # As the reference: JSON parsing fails and the gateway does a plain close.
    async def body():
        ws = await _first_frame(gw.url, raw)
        assert (ws.close_code, ws.close_reason) == (1000, "")
        assert _responses(ws) == []
    run(body())


@pytest.mark.parametrize("raw", [b"[1, 2]", b"null", b"42"], ids=["array", "null", "number"])
def test_non_object_first_frame_closes_1008(gw, raw):
    async def body():
        ws = await _first_frame(gw.url, raw)
        assert ws.close_code == 1008
        assert _responses(ws) == []
    run(body())


@pytest.mark.parametrize("raw", [{"foo": 1}, {"type": "event", "event": "x"},
                                 {"type": "res", "id": "1", "ok": True}],
                         ids=["no-type", "event", "res"])
def test_json_non_request_first_frame_closes_1008(gw, raw):
    async def body():
        ws = await _first_frame(gw.url, raw)
        assert (ws.close_code, ws.close_reason) == (1008, "invalid request frame")
        assert _responses(ws) == []
    run(body())


def test_malformed_request_first_frame_gets_error_naming_the_field(gw):
    async def body():
        ws = await _first_frame(gw.url, {"type": "req", "id": "9", "method": ""})
        (res,) = _responses(ws)
        assert res["id"] == "9" and res["error"]["code"] == "INVALID_REQUEST"
        assert "$.method" in res["error"]["message"]
        assert ws.close_code == 1008
    run(body())


def test_other_method_first_gets_error_then_close(gw):
    async def body():
        ws = await _first_frame(gw.url, {"type": "req", "id": "1", "method": "health"})
        (res,) = _responses(ws)
        assert res == {"type": "res", "id": "1", "ok": False,
                       "error": {"code": "INVALID_REQUEST",
                                 "message": "invalid handshake: first request must be connect"}}
        assert ws.frames[-1] is res  # the error comes before the close
        assert (ws.close_code, ws.close_reason) == (
            1008, "invalid handshake: first request must be connect")
    run(body())


def _bad_client_mode(p):
    p["client"]["mode"] = "banana"


def _bad_client_id(p):
    p["client"]["id"] = "nope"


def _no_client(p):
    del p["client"]


def _client_extra(p):
    p["client"]["bogus"] = 1


def _min_protocol_str(p):
    p["minProtocol"] = "4"


@pytest.mark.parametrize("mutate,path", [
    (_bad_client_mode, "$.params.client.mode"),
    (_bad_client_id, "$.params.client.id"),
    (_no_client, "$.params"),
    (_client_extra, "$.params.client"),
    (_min_protocol_str, "$.params.minProtocol"),
], ids=["client.mode", "client.id", "no-client", "client-extra-key", "minProtocol-type"])
def test_invalid_connect_params_name_the_json_path(gw, mutate, path):
    async def body():
        frame = _connect_frame()
        mutate(frame["params"])
        ws = await RawWS.open(gw.url)
        ws.send(frame)
        res = await ws.response("c1")
        await ws.wait_closed()
        err = res["error"]
        assert res["ok"] is False and err["code"] == "INVALID_REQUEST"
        assert err["message"].startswith("invalid connect params")
        assert f"`{path}`" in err["message"], err["message"]
        assert ws.close_code == 1008
        assert len(ws.close_reason.encode()) <= 123
        assert err["message"].startswith(ws.close_reason.rstrip("."))
    run(body())


@pytest.mark.parametrize("params", [None, "x", []], ids=["missing", "string", "array"])
def test_connect_params_not_an_object(gw, params):
    async def body():
        frame = {"type": "req", "id": "c1", "method": "connect"}
        if params is not None:
            frame["params"] = params
        ws = await _first_frame(gw.url, frame)
        (res,) = _responses(ws)
        assert res["error"]["code"] == "INVALID_REQUEST"
        assert "`$.params`" in res["error"]["message"]
        assert ws.close_code == 1008
    run(body())


def _padded_connect(total: int) -> bytes:
    frame = _connect_frame(client_id="cli", mode="cli", locale="")
    base = len(json.dumps(frame, separators=(",", ":")).encode())
    frame["params"]["locale"] = "x" * (total - base)
    data = json.dumps(frame, separators=(",", ":")).encode()
    assert len(data) == total
    return data


def test_oversize_preauth_frame_closes_1009(gw):
    async def body():
        ws = await _first_frame(gw.url, _padded_connect(65537))
        assert ws.close_code == 1009
        assert _responses(ws) == []
    run(body())


def test_oversize_preauth_fragmented_message_closes_1009(gw):
    async def body():
        ws = await RawWS.open(gw.url)
        ws.transport.send(WSMsgType.TEXT, b"x" * 40000, fin=False)
        ws.transport.send(WSMsgType.CONTINUATION, b"x" * 40000, fin=True)
        await ws.wait_closed()
        assert ws.close_code == 1009
    run(body())


def test_preauth_frame_of_exactly_64_kib_is_accepted(gw):
    async def body():
        ws = await RawWS.open(gw.url)
        ws.methods["c1"] = "connect"
        ws.send(_padded_connect(65536))
        assert (await ws.response("c1"))["ok"]
        await ws.close()
    run(body())


@pytest.mark.parametrize("raw", [b'{"type":"req","id":"1","method":"conn\xffect"}', b"\xff\xfe{}",
                                 b'{"a":"\xc3"}'], ids=["in-string", "leading", "truncated-seq"])
def test_invalid_utf8_first_frame_closes_1007(gw, raw):
    async def body():
        ws = await _first_frame(gw.url, raw)
        assert ws.close_code == 1007
        assert _responses(ws) == []
    run(body())


@pytest.mark.parametrize("lo,hi", [(1, 2), (5, 6), (3, 3)])
def test_protocol_mismatch_closes_1002(gw, lo, hi):
    async def body():
        ws = await RawWS.open(gw.url)
        ws.send(_connect_frame(client_id="cli", mode="cli", min_protocol=lo, max_protocol=hi))
        res = await ws.response("c1")
        await ws.wait_closed()
        assert res["error"] == {
            "code": "INVALID_REQUEST", "message": "protocol mismatch",
            "details": {"code": "PROTOCOL_MISMATCH", "clientMinProtocol": lo, "clientMaxProtocol": hi,
                        "expectedProtocol": 4, "minimumProbeProtocol": 3}}
        assert (ws.close_code, ws.close_reason) == (1002, "protocol mismatch")
    run(body())


def test_protocol_range_negotiates_4(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli", min_protocol=3, max_protocol=9)
        assert ws.hello["protocol"] == 4
        await ws.close()
        probe = await RawWS.connected(gw.url, client_id="openclaw-probe", mode="probe",
                                      min_protocol=3, max_protocol=3)
        assert probe.hello["protocol"] == 3
        await probe.close()
    run(body())


def test_invalid_role(gw):
    async def body():
        ws = await RawWS.open(gw.url)
        ws.send(_connect_frame(role="admin"))
        res = await ws.response("c1")
        await ws.wait_closed()
        assert res["error"] == {"code": "INVALID_REQUEST", "message": "invalid role"}
        assert (ws.close_code, ws.close_reason) == (1008, "invalid role")
    run(body())


def test_frames_after_a_rejected_connect_get_nothing(gw):
    async def body():
        ws = await RawWS.open(gw.url)
        ws.send(_connect_frame(token="wrong"))
        ws.request("health", req_id="h1")
        await ws.wait_closed()
        assert [r["id"] for r in _responses(ws)] == ["c1"]
        assert ws.close_code == 1008
    run(body())


# -- handshake timeout ----------------------------------------------------------------------------

@pytest.mark.parametrize("env_name", ["KRABFAST_HANDSHAKE_TIMEOUT_MS", "OPENCLAW_HANDSHAKE_TIMEOUT_MS"])
def test_handshake_timeout(gateway_server, env_name):
    # There is no CLI flag for the handshake timeout; the env var sets config.handshake_timeout_ms.
    srv = gateway_server("--token", TOKEN, env={env_name: "500"})

    async def body():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        idle = await RawWS.open(srv.url)
        ok = await RawWS.connected(srv.url, client_id="cli", mode="cli")
        await idle.wait_closed(5)
        waited = loop.time() - t0
        assert 0.4 <= waited <= 2.5, waited
        assert idle.got_close_frame and (idle.close_code, idle.close_reason) == (1000, "")
        assert [f["event"] for f in idle.frames] == ["connect.challenge"]
        # A socket that connected in time is unaffected.
        await asyncio.sleep(0.3)
        assert (await ok.call("system.echo", {"text": "still here"}))["ok"]
        await ok.close()
    run(body())


# -- pre-auth connection cap ----------------------------------------------------------------------

async def _expect_503(url: str, **kw) -> None:
    with pytest.raises(WSInvalidStatusError) as info:
        await RawWS.open(url, **kw)
    assert info.value.response is not None and int(info.value.response.status) == 503


async def _eventually_opens(url: str, timeout: float = 3.0) -> RawWS:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await RawWS.open(url)
        except WSInvalidStatusError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


def test_33rd_unauthenticated_socket_gets_503(gateway_server):
    srv = gateway_server("--token", TOKEN)

    async def body():
        # Failed and abandoned handshakes must not leak pending slots.
        for i in range(40):
            ws = await RawWS.open(srv.url)
            kind = i % 5
            if kind == 0:
                ws.send(b"not json")
            elif kind == 1:
                ws.send(_connect_frame(token="WRONG"))
            elif kind == 2:
                ws.send(_padded_connect(70000))
            elif kind == 3:
                await ws.close()
            else:
                ws.transport.disconnect(graceful=False)
            await ws.wait_closed()
        pending = []
        for _ in range(32):
            pending.append(await _eventually_opens(srv.url))
        extra: list[RawWS] = []
        try:
            await _expect_503(srv.url)
            # The cap is per client IP: another loopback address still gets in.
            other = await RawWS.open(srv.url, local_addr=("127.0.0.2", 0))
            extra.append(other)
            # Authenticating one of the 32 frees a slot...
            first = pending.pop(0)
            res = await first.call("connect", connect_params(client_id="cli", mode="cli"))
            assert res["ok"]
            extra.append(first)
            pending.append(await RawWS.open(srv.url))
            await _expect_503(srv.url)
            # ...and so does closing one.
            await pending.pop(0).close()
            pending.append(await _eventually_opens(srv.url))
            await _expect_503(srv.url)
            # The earlier pending sockets are untouched: one can still connect.
            res = await pending[-1].call("connect", connect_params(client_id="cli", mode="cli"))
            assert res["ok"]
        finally:
            for ws in pending + extra:
                await ws.close()
    run(body())
