"""A reader that falls behind under presence churn: its responses do not wait behind
presence events, and it gets only the newest presence once it drains (no seq gap).

Presence events carry the whole list, so one that is behind needs only the newest. Before
coalescing, every presence event queued in the gateway for the stalled socket and a
`health` reply waited behind all of them (more than 5 s for a slow reader).
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.integration.helpers import TOKEN, RawWS, run

N_EVENTS = 400  # presence keeps 200 rows: later events are ~200 KB each, ~60 MB in all
ROW_TEXT = 900  # under the 1,024-character row limit: each event adds ~1 KB to the list


async def _client(url: str, *scopes: str, rcvbuf: int | None = None) -> RawWS:
    ws = await RawWS.connected(url, client_id="gateway-client", mode="backend",
                               scopes=list(scopes), timeout=10)
    if rcvbuf is not None:
        sock = ws.transport.underlying_transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return ws


@pytest.mark.parametrize("core", ["compiled", "pure"])
def test_slow_reader_gets_newest_presence_and_prompt_responses(gateway_server, core):
    env = {"KRABFAST_NO_EXTENSIONS": "1"} if core == "pure" else {}
    gw = gateway_server("--token", TOKEN, env=env)

    async def body():
        slow = await _client(gw.url, "operator.read", rcvbuf=32 * 1024)
        trigger = await _client(gw.url, "operator.admin")
        try:
            slow.transport.underlying_transport.pause_reading()
            for i in range(N_EVENTS):
                text = f"churn-{i:04d}|" + "x" * ROW_TEXT
                res = await trigger.call("system-event", {"text": text}, timeout=10)
                assert res["ok"] is True, str(res)[:300]
            newest = (await trigger.call("status"))["payload"]["gateway"]["stateVersion"]["presence"]
            # The slow reader asks for health, then reads again.
            req = slow.request("health")
            slow.transport.underlying_transport.resume_reading()
            res = await slow.response(req, timeout=10)
            assert res["ok"] is True
            before = [f for f in slow.frames[:slow.frames.index(res)]
                      if f.get("event") == "presence"]
            # Without coalescing all N_EVENTS queue ahead of the reply; with it, only what the
            # kernel buffers (~4 MB on loopback) had already taken.
            assert len(before) < N_EVENTS // 4, (len(before), N_EVENTS)
            # Once drained it gets the newest list, exactly once, with the next seq.
            ev = await slow.event("presence", timeout=5, pred=lambda e: e["stateVersion"][
                "presence"] == newest)
            assert ev["stateVersion"]["presence"] == newest
            seqs = [f["seq"] for f in slow.frames if f.get("type") == "event" and "seq" in f]
            assert seqs == list(range(1, len(seqs) + 1)), seqs[:40]
            versions = [f["stateVersion"]["presence"] for f in slow.events("presence")]
            assert versions == sorted(set(versions))
            assert len(versions) < N_EVENTS // 4 + 2
            await slow.close()
            await trigger.close()
        finally:
            for ws in (slow, trigger):
                if ws.transport is not None and not ws.transport.is_disconnected:
                    ws.transport.disconnect(graceful=False)
    run(body(), timeout=60)
