"""Server-pushed events on real sockets: tick cadence and seq, presence, shutdown."""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
import uuid

import pytest

from tests.integration.helpers import TOKEN, RawWS, gateway_client, run

TICK_MS = 200


def _seqs(ws: RawWS) -> list[int]:
    return [f["seq"] for f in ws.events() if "seq" in f]


def _assert_gapless(ws: RawWS) -> None:
    seqs = _seqs(ws)
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert "seq" not in ws.frames[0]  # the challenge is outside the seq stream


# -- tick -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tick_gw(gateway_server_module):
    return gateway_server_module("--token", TOKEN, "--tick-interval-ms", str(TICK_MS))


def test_tick_cadence_and_per_socket_seq(tick_gw):
    async def body():
        loop = asyncio.get_running_loop()
        a = await RawWS.connected(tick_gw.url, client_id="cli", mode="cli", scopes=["operator.read"])
        assert a.hello["policy"]["tickIntervalMs"] == TICK_MS
        await asyncio.sleep(TICK_MS / 1000 * 1.5)  # b joins later: its seq stream is its own
        b = await RawWS.connected(tick_gw.url, client_id="gateway-client", mode="backend", scopes=[])
        pending = await RawWS.open(tick_gw.url)
        arrivals: dict[str, list[float]] = {"a": [], "b": []}
        ticks: dict[str, list[dict]] = {"a": [], "b": []}
        for _ in range(5):
            for name, ws in (("a", a), ("b", b)):
                ticks[name].append(await ws.event("tick", timeout=2))
                arrivals[name].append(loop.time())
        for name, ws in (("a", a), ("b", b)):
            _assert_gapless(ws)
            for t in ticks[name]:
                assert set(t) == {"type", "event", "payload", "seq"}  # no stateVersion on tick
                assert abs(t["payload"]["ts"] - time.time() * 1000) < 5000
            server_gaps = [y["payload"]["ts"] - x["payload"]["ts"]
                           for x, y in zip(ticks[name], ticks[name][1:])]
            assert all(TICK_MS * 0.5 <= g <= TICK_MS * 2 for g in server_gaps), server_gaps
            assert TICK_MS * 0.8 <= statistics.mean(server_gaps) <= TICK_MS * 1.25, server_gaps
            local = [(y - x) * 1000 for x, y in zip(arrivals[name], arrivals[name][1:])]
            assert TICK_MS * 0.6 <= statistics.mean(local) <= TICK_MS * 1.6, local
            # seq strictly +1 per tick on each socket
            assert [t["seq"] for t in ticks[name]] == list(range(ticks[name][0]["seq"],
                                                                 ticks[name][0]["seq"] + 5))
        # The same broadcast carries a different seq on each socket (b joined later).
        last_b = ticks["b"][-1]
        (same,) = await _tick_with_ts(a, last_b["payload"]["ts"])
        assert same["seq"] > last_b["seq"]
        # An unauthenticated socket gets no ticks.
        assert [f.get("event") for f in pending.frames] == ["connect.challenge"]
        for ws in (a, b, pending):
            await ws.close()
    run(body())


async def _tick_with_ts(ws: RawWS, ts: int) -> list[dict]:
    await ws.event("tick", pred=lambda t: t["payload"]["ts"] >= ts, timeout=2)
    return [t for t in ws.events("tick") if t["payload"]["ts"] == ts]


# -- presence -------------------------------------------------------------------------------------

def _row(event: dict, instance_id: str) -> dict | None:
    rows = [r for r in event["payload"]["presence"] if r.get("instanceId") == instance_id]
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


@pytest.mark.parametrize("graceful", [True, False], ids=["close-frame", "tcp-drop"])
def test_presence_on_connect_and_disconnect(gw, graceful):
    async def body():
        watcher = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.read"])
        blind = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=[])
        assert blind.hello["snapshot"]["presence"] == []  # presence is operator.read data
        inst = "it-" + uuid.uuid4().hex
        ui = await RawWS.connected(gw.url, client_id="openclaw-macos", mode="ui",
                                   display_name="krab-desk", instance_id=inst)
        ev = await watcher.event("presence", pred=lambda e: _row(e, inst) is not None)
        row = _row(ev, inst)
        assert row["reason"] == "connect" and row["host"] == "krab-desk" and row["mode"] == "ui"
        assert row["roles"] == ["operator"] and "ip" not in row  # loopback peers carry no ip
        v_connect = ev["stateVersion"]["presence"]
        assert isinstance(ev["stateVersion"]["health"], int)
        if graceful:
            await ui.close()
        else:
            ui.transport.disconnect(graceful=False)
        ev2 = await watcher.event(
            "presence", pred=lambda e: (_row(e, inst) or {}).get("reason") == "disconnect")
        assert ev2["stateVersion"]["presence"] > v_connect
        assert _row(ev2, inst)["ts"] >= row["ts"]
        # The row stays listed (reason disconnect) until it expires.
        rows = (await watcher.call("system-presence"))["payload"]
        assert [r["reason"] for r in rows if r.get("instanceId") == inst] == ["disconnect"]
        await blind.barrier()
        assert blind.events("presence") == []
        _assert_gapless(watcher)
        for ws in (watcher, blind):
            await ws.close()
    run(body())


def test_ephemeral_clients_cause_no_presence(gw):
    async def body():
        watcher = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.read"])
        status = (await watcher.call("status"))["payload"]
        v0 = status["gateway"]["stateVersion"]["presence"]
        for client_id, mode in (("cli", "cli"), ("gateway-client", "backend"),
                                ("openclaw-probe", "probe")):
            ws = await RawWS.connected(gw.url, client_id=client_id, mode=mode)
            await ws.close()
        # Wait until the server has forgotten all three sockets, then check nothing was sent.
        deadline = time.monotonic() + 3
        while (await watcher.call("status"))["payload"]["gateway"]["connections"] > 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await watcher.barrier()
        assert watcher.events("presence") == []
        status = (await watcher.call("status"))["payload"]
        assert status["gateway"]["stateVersion"]["presence"] == v0
        await watcher.close()
    run(body())


def test_system_event_broadcasts_presence_with_bumped_version(gw):
    async def body():
        reader = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.read"])
        async with gateway_client(gw.url, client_id="cli", mode="cli",
                                  scopes=["operator.admin"]) as admin:
            v0 = (await admin.request("status"))["gateway"]["stateVersion"]["presence"]
            text = "system event " + uuid.uuid4().hex
            assert await admin.request("system-event", {"text": text}) == {"ok": True}
            # The caller's own presence event arrives before its response (reference order).
            own = admin.events.get_nowait()
            assert own.event == "presence"
            ev = await reader.event("presence")
            assert ev["stateVersion"]["presence"] == v0 + 1
            (entry,) = [r for r in ev["payload"]["presence"] if r.get("text") == text]
            assert set(entry) == {"text", "ts"}  # bare text makes a {text, ts} row
            assert abs(entry["ts"] - time.time() * 1000) < 5000
            assert ev["payload"]["presence"][0]["reason"] == "self"
            listed = await admin.request("system-presence")
            assert [r.get("text") for r in listed].count(text) == 1
        await reader.close()
    run(body())


# -- shutdown -------------------------------------------------------------------------------------

def test_sigterm_sends_shutdown_then_closes_1012_and_exits_0(gateway_server):
    srv = gateway_server("--token", TOKEN)

    async def body():
        clients = [
            await RawWS.connected(srv.url, client_id="cli", mode="cli", scopes=["operator.admin"]),
            await RawWS.connected(srv.url, client_id="cli", mode="cli", scopes=["operator.read"]),
            await RawWS.connected(srv.url, client_id="cli", mode="cli", scopes=[]),
            await RawWS.connected(srv.url, client_id="openclaw-linux", mode="ui"),
            await RawWS.connected(srv.url, client_id="gateway-client", mode="backend"),
        ]
        unauthenticated = await RawWS.open(srv.url)
        t0 = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        for ws in clients:
            await ws.wait_closed(5)
            assert ws.got_close_frame, "no close frame before the socket dropped"
            assert ws.close_code == 1012, (ws.close_code, ws.close_reason)
            (shutdown,) = ws.events("shutdown")
            assert isinstance(shutdown["payload"]["reason"], str) and shutdown["payload"]["reason"]
            _assert_gapless(ws)
        await unauthenticated.wait_closed(5)
        assert unauthenticated.events("shutdown") == []
        rc = await asyncio.to_thread(srv.process.wait, 5)
        assert rc == 0, srv.output()
        assert time.monotonic() - t0 < 3.0
    run(body())


def test_shutdown_is_the_last_event_before_the_close(gateway_server):
    srv = gateway_server("--token", TOKEN)

    async def body():
        ui = await RawWS.connected(srv.url, client_id="openclaw-linux", mode="ui")
        reader = await RawWS.connected(srv.url, client_id="cli", mode="cli", scopes=["operator.read"])
        srv.process.send_signal(signal.SIGTERM)
        for ws in (ui, reader):
            await ws.wait_closed(5)
            assert ws.close_code == 1012
        assert reader.frames[-1]["event"] == "shutdown", [
            (f.get("event"), f.get("seq")) for f in reader.frames]
        assert await asyncio.to_thread(srv.process.wait, 5) == 0
    run(body())
