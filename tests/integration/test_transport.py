"""WebSocket-level behaviour: ping/pong, fragmentation, isolation between connections."""

from __future__ import annotations

import asyncio
import json

from picows import WSMsgType

from tests.integration.helpers import RawWS, connect_params, run


def test_ping_is_answered_with_pong(gw):
    async def body():
        pending = await RawWS.open(gw.url)
        assert await pending.ping(b"before-connect") == b"before-connect"
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        assert await ws.ping(b"after-connect") == b"after-connect"
        assert await ws.ping(b"") == b""
        # A ping in the middle of a fragmented message is answered and the message completes.
        frame = json.dumps({"type": "req", "id": "f1", "method": "system.echo",
                            "params": {"text": "frag"}}).encode()
        ws.methods["f1"] = "system.echo"
        ws.transport.send(WSMsgType.TEXT, frame[:10], fin=False)
        assert await ws.ping(b"mid") == b"mid"
        ws.transport.send(WSMsgType.CONTINUATION, frame[10:], fin=True)
        assert (await ws.response("f1"))["payload"] == {"ok": True, "text": "frag"}
        for w in (pending, ws):
            await w.close()
    run(body())


def test_client_close_is_echoed(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        ws.transport.send_close(4321, b"bye")
        await ws.wait_closed()
        assert ws.close_code == 4321
        # An empty CLOSE (no status, what the reference CLI sends) is answered empty.
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        ws.transport.send(WSMsgType.CLOSE, b"")
        await ws.wait_closed()
        assert ws.got_close_frame
    run(body())


def test_stray_continuation_frame_closes_1002(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        ws.transport.send(WSMsgType.CONTINUATION, b"x", fin=True)
        await ws.wait_closed()
        assert ws.close_code == 1002
    run(body())


def test_data_frame_inside_fragmented_message_closes_1002(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        ws.transport.send(WSMsgType.TEXT, b'{"type":"req","id":"f1",', fin=False)
        ws.send({"type": "req", "id": "f2", "method": "system.echo", "params": {"text": "x"}})
        try:
            await ws.wait_closed(1.0)
        except asyncio.TimeoutError:
            pass
        answered = [f for f in ws.frames if f.get("id") == "f2"]
        assert ws.close_code == 1002, f"still open (close {ws.close_code}); f2 answered: {answered}"
        assert not answered
    run(body())


async def _misbehave_preauth(url: str, raw: bytes) -> int | None:
    ws = await RawWS.open(url)
    ws.send(raw)
    code, _ = await ws.wait_closed()
    return code


async def _misbehave_after_auth(url: str) -> int | None:
    ws = await RawWS.connected(url, client_id="cli", mode="cli")
    for i in range(50):
        ws.send(b"garbage" if i % 3 else b'{"type":"req","id":"x","method":"no.such"}')
        ws.send(b'{"type":"req","method":"health"}')
        await asyncio.sleep(0)
    ws.send(b'{"type":"req","id":"u","method":"\xff"}')  # finally: invalid UTF-8 -> 1007
    code, _ = await ws.wait_closed()
    return code


def test_misbehaving_connections_do_not_affect_others(gw):
    async def body():
        good = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.read"])
        good2 = await RawWS.connected(gw.url, client_id="gateway-client", mode="backend",
                                      scopes=["operator.read"])

        async def well_behaved(ws: RawWS, tag: str) -> None:
            for batch in range(10):
                ids = [ws.request("system.echo", {"text": f"{tag}{batch}-{i}"}) for i in range(20)]
                for i, req_id in enumerate(ids):
                    res = await ws.response(req_id)
                    assert res["payload"] == {"ok": True, "text": f"{tag}{batch}-{i}"}, res
                await asyncio.sleep(0.005)

        big = json.dumps({"type": "req", "id": "c1", "method": "connect",
                          "params": connect_params(locale="x" * 70000)}).encode()
        results = await asyncio.gather(
            well_behaved(good, "a"), well_behaved(good2, "b"),
            _misbehave_after_auth(gw.url), _misbehave_after_auth(gw.url),
            _misbehave_preauth(gw.url, b"not json"),
            _misbehave_preauth(gw.url, b"\xff\xfe"),
            _misbehave_preauth(gw.url, big),
            _misbehave_preauth(gw.url, b'{"type":"req","id":"1","method":"health"}'),
        )
        assert results[2:] == [1007, 1007, 1000, 1007, 1009, 1008]  # not JSON: plain close
        for ws in (good, good2):
            assert ws.close_code is None and not ws.disconnected.is_set()
            assert [f for f in ws.frames if f.get("type") == "res" and not f["ok"]] == []
            assert (await ws.call("system.echo", {"text": "still fine"}))["ok"]
            await ws.close()
    run(body())


def test_dead_peers_are_reaped(gateway_server):
    # Keepalive every 300 ms: a peer that answers nothing (not even pings) is dropped
    # after two rounds; a responsive one stays.
    gw = gateway_server("--token", "T", env={"KRABFAST_PING_INTERVAL_MS": "300"})

    async def body():
        alive = await RawWS.connected(gw.url, client_id="cli", mode="cli")
        dead = await RawWS.connected(gw.url, client_id="cli", mode="cli",
                                     connect_kw={"auto_pong": False})
        await asyncio.wait_for(dead.disconnected.wait(), 5)
        assert not alive.disconnected.is_set()
        res = await alive.call("system.echo", {"text": "still here"})
        assert res["ok"]
        await alive.close()
    run(body())
