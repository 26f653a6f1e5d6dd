"""Backpressure on real sockets: slow readers, held presence, slow-consumer closes.

A "stalled" client pauses its transport (no more recv); its kernel receive buffer is fixed
at connect time, so what the gateway writes to it piles up first in the kernel (that buffer
plus the gateway's send buffer, at most `tcp_wmem` max) and then in the gateway's own
transport write buffer, which is what `--drop-if-slow-bytes` / `--max-buffered-bytes`
measure.

Presence frames are small now (row texts clipped, all rows capped at 256 KiB), so the
backlog is built from what is never dropped: `system.echo` responses the stalled client asks
for itself (it still writes; the gateway answers into its write buffer). The client then
sends a `system-event` "marker": the gateway handles a socket's requests in order, so once
another client sees the marker's presence, every echo response before it is queued, and the
backlog is known to exceed (total echoed - what the kernel can hold). No sleeps: each step
waits for what the gateway did.

Clients are `gateway-client`/`backend` on loopback, so they keep the scopes they ask for and
add no presence rows of their own: every presence event here comes from a `system-event`.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import threading
import time

import orjson
import pytest
from picows import WSMsgType

from tests.integration.helpers import TOKEN, RawWS, run

TICK_MS = 200
MB = 1 << 20

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")


# -- helpers ------------------------------------------------------------------------------------

async def _q(awaitable, what: str = ""):
    """Await a RawWS wait; re-raise its failure without the (multi-MB) frames it quotes."""
    try:
        return await awaitable
    except (AssertionError, asyncio.TimeoutError) as exc:
        raise AssertionError(f"{what}: {type(exc).__name__}: {str(exc)[:600]}") from None


BIG_FRAME = 256 * 1024


class _Client(RawWS):
    """RawWS plus `on_frame`, run in the frame callback itself (no scheduling delay), and
    quick to read a multi-MB backlog: frames over BIG_FRAME (the backlog's echo responses)
    are parsed but not schema-checked, which costs ~20 ms per MB and made a draining
    "slow consumer" genuinely too slow to read its backlog before the gateway gave up."""

    on_frame = None

    def on_ws_frame(self, transport, frame) -> None:
        if frame.msg_type is WSMsgType.TEXT and frame.payload_size > BIG_FRAME:
            data = frame.get_payload_as_bytes()
            self.raw.append(data)
            parsed = orjson.loads(data)
            self.frames.append(parsed)
            self._pending.append(parsed)
            self._changed.set()
        else:
            super().on_ws_frame(transport, frame)
        if self.on_frame is not None:
            self.on_frame()


async def _client(url: str, *scopes: str, rcvbuf: int | None = None) -> _Client:
    """A scope-keeping client. `rcvbuf` fixes its kernel receive buffer (no autotuning), so
    how much a stalled reader's kernel absorbs is known and its window is wide open again
    as soon as it resumes (shrinking the buffer later would make it ramp up slowly)."""
    ws = await _q(_Client.connected(url, client_id="gateway-client", mode="backend",
                                  scopes=list(scopes), timeout=10), "connect")
    if rcvbuf is not None:
        sock = ws.transport.underlying_transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return ws


def _seqs(ws: RawWS) -> list[int]:
    return [f["seq"] for f in ws.frames if f.get("type") == "event" and "seq" in f]


def _assert_gapless(ws: RawWS, name: str) -> None:
    seqs = _seqs(ws)
    assert seqs == list(range(1, len(seqs) + 1)), (
        f"{name}: seq not strictly +1 from 1: first break at "
        f"{next((i for i, s in enumerate(seqs) if s != i + 1), None)} of {len(seqs)}: "
        f"{seqs[:50]}")


def _presence_versions(ws: RawWS) -> list[int]:
    return [f["stateVersion"]["presence"] for f in ws.events("presence")]


def _stall(ws: RawWS) -> int:
    """Stop reading; returns the client's local port."""
    raw = ws.transport.underlying_transport
    raw.pause_reading()
    return raw.get_extra_info("sockname")[1]


def _resume(ws: RawWS) -> None:
    ws.transport.underlying_transport.resume_reading()


def _abort(*clients: RawWS) -> None:
    for ws in clients:
        if ws.transport is not None and not ws.transport.is_disconnected:
            ws.transport.disconnect(graceful=False)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class _RssPeak:
    """Samples a process's RSS every few ms in a thread; `.peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = _rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            try:
                self.peak = max(self.peak, _rss(self.pid))
            except (OSError, AssertionError):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


_TCP_ESTABLISHED = "01"


def _server_side(gw_port: int, peer_port: int) -> list[tuple[str, int]]:
    """(state, tx_queue) of the gateway's end of the connection to `peer_port`."""
    found = []
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            cols = line.split()
            local, remote = cols[1], cols[2]
            lport, rport = (int(addr.rsplit(":", 1)[1], 16) for addr in (local, remote))
            if lport == gw_port and rport == peer_port:
                found.append((cols[3], int(cols[4].split(":")[0], 16)))
    return found


def _server_side_open(gw_port: int, peer_port: int) -> bool:
    return any(state == _TCP_ESTABLISHED for state, _ in _server_side(gw_port, peer_port))


async def _wait_server_side_gone(gw_port: int, peer_port: int, timeout: float) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while _server_side_open(gw_port, peer_port):
        if loop.time() - t0 > timeout:
            raise AssertionError(
                f"the gateway still holds the connection to :{peer_port} {timeout}s later: "
                f"(state, kernel send queue) = {_server_side(gw_port, peer_port)}")
        await asyncio.sleep(0.05)
    return loop.time() - t0


async def _next_tick(ws: RawWS, timeout: float = 3.0) -> dict:
    """The first tick this socket receives after everything already received."""
    last = max(_seqs(ws), default=0)
    return await _q(ws.event("tick", pred=lambda f: f["seq"] > last, timeout=timeout), "tick")


def _tick_ts_gaps(ws: RawWS) -> list[int]:
    ts = [t["payload"]["ts"] for t in ws.events("tick")]
    return [b - a for a, b in zip(ts, ts[1:])]


async def _pump(trigger: RawWS, fast: list[RawWS], text: str = "pump") -> None:
    """One system-event; wait until every fast reader has its presence event."""
    marks = [len(ws.events("presence")) for ws in fast]
    res = await _q(trigger.call("system-event", {"text": text}, timeout=10), "system-event")
    assert res["ok"] is True, str(res)[:300]
    for ws, n in zip(fast, marks):
        while len(ws.events("presence")) <= n:
            await _q(ws.event("presence", timeout=5), "presence after pump")


def _kernel_max(rcvbuf: int) -> int:
    """The most a stalled loopback connection's kernel buffers can hold: the gateway's send
    buffer (autotuned up to tcp_wmem's max) plus the client's receive buffer (the kernel
    doubles SO_RCVBUF for its bookkeeping)."""
    with open("/proc/sys/net/ipv4/tcp_wmem") as fh:
        wmem_max = int(fh.read().split()[2])
    return wmem_max + 2 * rcvbuf


async def _echo_backlog(ws: RawWS, watcher: RawWS, total: int, chunk: int, mark: str) -> list[str]:
    """`ws` (stalled) asks for `total` bytes of `system.echo` responses, then sends a
    `system-event` `mark`; returns once `watcher` saw the marker's presence, i.e. once the
    gateway has queued every one of those responses for `ws`. Returns the echo request ids."""
    ids = [ws.request("system.echo", {"text": f"{mark}:{i}|".ljust(chunk, "x")})
           for i in range(math.ceil(total / chunk))]
    ws.request("system-event", {"text": mark})
    await _q(watcher.event("presence", timeout=10, pred=lambda e: any(
        r.get("text") == mark for r in e["payload"]["presence"])), f"presence of {mark}")
    return ids


def _echoed(ws: RawWS, ids: list[str]) -> list[str]:
    """The ids of the echo responses in `ids` that `ws` received, in arrival order."""
    wanted = set(ids)
    return [f["id"] for f in ws.frames if f.get("type") == "res" and f.get("id") in wanted
            and f.get("ok") is True]


# -- droppable events: presence is held, newest only ------------------------------------------

DROP_BYTES = 200_000
N_EVENTS = 64
TEXT_BYTES = 8 * 1024  # clipped by the gateway to 1,024 in the row; a new row each time
SMALL_RCVBUF = 64 * 1024
ECHO_CHUNK = 2 * MB


def test_presence_dropped_for_slow_socket_without_seq_gap(gateway_server):
    gw = gateway_server("--token", TOKEN, "--tick-interval-ms", str(TICK_MS),
                        "--max-buffered-bytes", str(1 << 30),
                        "--drop-if-slow-bytes", str(DROP_BYTES))

    async def body():
        loop = asyncio.get_running_loop()
        fast = await _client(gw.url, "operator.read")
        slow = await _client(gw.url, "operator.read", "operator.admin", rcvbuf=SMALL_RCVBUF)
        trigger = await _client(gw.url, "operator.admin")
        try:
            slow_port = _stall(slow)
            # Over the drop threshold for sure: the kernel holds at most _kernel_max.
            echo_ids = await _echo_backlog(slow, fast, _kernel_max(SMALL_RCVBUF) + 4 * DROP_BYTES,
                                           256 * 1024, "bp-drop-mark")
            versions = []
            for i in range(N_EVENTS):
                prefix = f"bp-drop-{i:04d}|"  # distinct first 64 chars: a new row each time
                text = prefix + "x" * TEXT_BYTES
                res = await _q(trigger.call("system-event", {"text": text}, timeout=10),
                               f"system-event {i}")
                assert res["ok"] is True, str(res)[:300]
                answered = loop.time()
                ev = await _q(fast.event("presence", timeout=1.0, pred=lambda e: any(
                    r.get("text", "").startswith(prefix) for r in e["payload"]["presence"])),
                    f"fast reader: presence for event {i} within 1 s of its response")
                assert loop.time() - answered < 1.0
                versions.append(ev["stateVersion"]["presence"])
            # Every trigger reached the fast reader, in order, none skipped.
            assert versions == list(range(versions[0], versions[0] + N_EVENTS)), versions
            assert len(fast.events("presence")) == N_EVENTS + 1  # + the marker's
            _assert_gapless(fast, "fast reader")
            # The stalled socket is behind, not closed (ticks stay under --max-buffered-bytes).
            await _next_tick(fast)
            await _next_tick(fast)
            assert not slow.disconnected.is_set() and slow.close_code is None
            assert _server_side_open(gw.port, slow_port)
            assert await _subscribers(trigger) == 3

            _resume(slow)
            await _q(slow.barrier(timeout=15), "stalled reader catching up")
            assert _echoed(slow, echo_ids) == echo_ids  # responses are never dropped
            # Once drained it gets the newest presence (held for it, sent within ~100 ms).
            await _q(slow.event("presence", timeout=5, pred=lambda e: e["stateVersion"]
                                ["presence"] == versions[-1]), "the newest presence, once drained")
            assert not slow.disconnected.is_set()
            _assert_gapless(slow, "stalled reader")  # dropped presence took no seq
            # Behind since its backlog: of the 64 presence events only the newest reached it.
            # (Its marker's own presence may have: a socket's responses to the read being
            # handled are batched, and not counted as buffered until written.)
            got = _presence_versions(slow)
            assert got == sorted(set(got)) and set(got) & set(versions) == {versions[-1]}, got
            # Non-droppable ticks kept flowing to it while it was over the drop threshold.
            assert len(slow.events("tick")) >= len(fast.events("tick")) - 2

            # Caught up, it gets the next presence again, with the very next seq.
            last = _seqs(slow)[-1]
            res = await _q(trigger.call("system-event", {"text": "bp-drop-after"}), "system-event")
            assert res["ok"] is True
            ev = await _q(slow.event("presence", pred=lambda e: any(
                r.get("text") == "bp-drop-after" for r in e["payload"]["presence"])), "presence")
            assert _seqs(slow)[-1] >= ev["seq"] > last
            _assert_gapless(slow, "stalled reader after catching up")
            _assert_gapless(fast, "fast reader")
            for ws in (fast, slow, trigger):
                await ws.close()
        finally:
            _abort(fast, slow, trigger)
    run(body(), timeout=19)


# -- slow-consumer close on a non-droppable event -----------------------------------------------

LIMIT = 20_000_000        # --max-buffered-bytes == --drop-if-slow-bytes


async def _subscribers(trigger: RawWS) -> int:
    """How many authenticated sockets the gateway fans out to (`status`)."""
    res = await _q(trigger.call("status", timeout=5), "status")
    assert res["ok"] is True, str(res)[:300]
    return res["payload"]["gateway"]["connections"]


async def _slow_consumer_scenario(gw, resume: bool, out: dict) -> dict:
    """T (admin trigger), F (fast reader), S (stalls, then builds its own backlog of echo
    responses). Phase 1: a backlog that cannot exceed LIMIT; two ticks later S is still
    there. Phase 2: one more echo that must take it over LIMIT, then a marker; the first tick
    after F saw the marker closes S (F connected first: it gets that tick in the same fan-out
    pass), unless a tick already did between the echo and the marker (seen by polling
    `status`). With `resume`, S reads again right then (from F's frame callback): it must get
    its whole backlog and then the 1008 close frame, before the gateway gives up on it.
    Waits until the gateway's end of S's TCP connection is gone. Fills `out` (clients,
    measurements) as it goes, so the caller can clean up after a failure."""
    pid = gw.process.pid
    loop = asyncio.get_running_loop()
    out["trigger"] = trigger = await _client(gw.url, "operator.admin")
    out["fast"] = fast = await _client(gw.url, "operator.read")
    out["slow"] = slow = await _client(gw.url, "operator.read", "operator.admin",
                                       rcvbuf=SMALL_RCVBUF)
    await _pump(trigger, [fast, slow, trigger])
    assert await _subscribers(trigger) == 3
    await _next_tick(fast)
    out["baseline"] = _rss(pid)
    sampler = _RssPeak(pid)
    try:
        out["slow_port"] = slow_port = _stall(slow)
        # Phase 1: at most LIMIT - ECHO_CHUNK of responses in all, kernel or user space.
        ids = await _echo_backlog(slow, fast, LIMIT - 2 * ECHO_CHUNK, ECHO_CHUNK, "bp-under")
        await _next_tick(fast)
        await _next_tick(fast)
        assert await _subscribers(trigger) == 3, "S closed before its backlog could exceed LIMIT"
        assert _server_side_open(gw.port, slow_port)
        # Phase 2: one echo response (one handler call, so no tick can come in the middle)
        # that takes it past LIMIT in user space whatever the kernel holds, then a marker.
        big = _kernel_max(SMALL_RCVBUF) + 2 * ECHO_CHUNK
        ids.append(slow.request("system.echo", {"text": "bp-over|".ljust(big, "x")}))
        slow.request("system-event", {"text": "bp-over"})
        sent_at = loop.time()
        closing = loop.create_future()
        marked = False

        def stop_waiting(how: str) -> None:
            if not closing.done():
                if resume:  # S reads again at once: the gateway gives it 0.5 s to drain
                    _resume(slow)
                closing.set_result((loop.time(), how))

        def on_frame() -> None:  # in F's frame callback: no scheduling delay
            nonlocal marked
            f = fast.frames[-1]
            if f.get("event") == "presence" and any(
                    r.get("text") == "bp-over" for r in f["payload"]["presence"]):
                marked = True  # every response before it is queued: S is over LIMIT...
            elif f.get("event") == "tick" and marked:
                stop_waiting("tick after the marker")  # ...so this tick closed it

        async def poll() -> None:  # or a tick closed it before the marker was handled
            while not closing.done():
                if await _subscribers(trigger) == 2:
                    stop_waiting("closed before the marker")
                await asyncio.sleep(0.01)

        fast.on_frame = on_frame
        poller = asyncio.ensure_future(poll())
        try:
            closed_at, out["how"] = await _q(asyncio.wait_for(asyncio.shield(closing), 5),
                                             "S closed after its backlog exceeded LIMIT")
        finally:
            fast.on_frame = None
            await poller
        out["closing_tick_after_s"] = closed_at - sent_at
        out["echo_ids"] = ids
        assert await _subscribers(trigger) == 2, "the tick after S went over LIMIT did not close it"
        if resume:
            code, reason = await _q(slow.wait_closed(5), "slow consumer close")
            out["close"] = (code, reason)
            out["close_after_tick_s"] = loop.time() - closed_at
            out["received_before_close"] = len(_echoed(slow, ids))
        out["gone_after_s"] = await _wait_server_side_gone(gw.port, slow_port, 5)
        # F keeps getting ticks and presence after S is gone.
        await _next_tick(fast)
        await _pump(trigger, [fast, trigger])
        await _next_tick(fast)
        # The backlog is freed: RSS back near the baseline (allocator trimming is not instant).
        deadline = loop.time() + 5
        while True:
            out["after"] = _rss(pid)
            if out["after"] - out["baseline"] <= 8 * MB or loop.time() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        out["peak"] = sampler.stop()
    return out


def _memory_report(m: dict) -> str:
    return (f"baseline {m['baseline'] / MB:.1f} MB, peak {m['peak'] / MB:.1f} MB, "
            f"after {m['after'] / MB:.1f} MB")


def _assert_memory_released(m: dict) -> None:
    growth = m["peak"] - m["baseline"]
    assert growth > 20 * MB, "the backlog should be clearly measurable: " + _memory_report(m)
    allowed = max(8 * MB, 0.25 * growth)
    assert m["after"] - m["baseline"] <= allowed, (
        f"RSS did not fall back within {allowed / MB:.1f} MB of the baseline: "
        + _memory_report(m))


def _slow_consumer_gateway(gateway_server):
    return gateway_server("--token", TOKEN, "--tick-interval-ms", str(TICK_MS),
                          "--max-buffered-bytes", str(LIMIT), "--drop-if-slow-bytes", str(LIMIT))


def test_tick_closes_slow_consumer_1008_and_memory_is_released(gateway_server):
    gw = _slow_consumer_gateway(gateway_server)

    async def body():
        m: dict = {}
        try:
            await _slow_consumer_scenario(gw, True, m)
            fast, slow, trigger = m["fast"], m["slow"], m["trigger"]
            # S read again at the closing tick: its whole backlog, then the close frame.
            # (The gateway aborts a socket whose backlog is still unsent a while after the
            # close: that would show as (None, None) with fewer echo responses received.)
            assert m["close"] == (1008, "slow consumer"), m
            assert slow.got_close_frame
            assert m["received_before_close"] == len(m["echo_ids"]), m
            assert _echoed(slow, m["echo_ids"]) == m["echo_ids"]  # in order
            assert m["closing_tick_after_s"] < 3.0, m
            # What S did receive before the close is a gapless seq stream, without the
            # presence that came while it was over the limit.
            _assert_gapless(slow, "slow consumer")
            assert len(slow.events("presence")) < len(fast.events("presence"))
            # The fast reader: every presence event, every tick, no seq gap, no stall.
            _assert_gapless(fast, "fast reader")
            versions = _presence_versions(fast)
            assert versions == list(range(versions[0], versions[0] + len(versions))), versions
            gaps = _tick_ts_gaps(fast)
            assert gaps and max(gaps) <= 1000, gaps
            assert not fast.disconnected.is_set() and not trigger.disconnected.is_set()
            _assert_memory_released(m)
            for ws in (fast, trigger):
                await ws.close()
        finally:
            _abort(*(m.get(k) for k in ("fast", "slow", "trigger") if m.get(k)))
    run(body(), timeout=19)


def test_stalled_slow_consumer_is_dropped_and_memory_released(gateway_server):
    """Regression (fixed in baef52a): the close used to be a graceful transport close, which
    waits for the write buffer to drain; for a peer that never reads again that is forever
    (it keeps answering zero-window probes), so the socket stayed ESTABLISHED and its
    >= --max-buffered-bytes backlog stayed in the gateway's memory."""
    gw = _slow_consumer_gateway(gateway_server)

    async def body():
        m: dict = {}
        try:
            # S never reads again: after the closing tick the gateway must let go of it
            # (it cannot deliver the close frame) and free its backlog.
            await _slow_consumer_scenario(gw, False, m)
            fast = m["fast"]
            assert m["closing_tick_after_s"] < 3.0, m
            assert m["gone_after_s"] < 5.0
            _assert_gapless(fast, "fast reader")
            gaps = _tick_ts_gaps(fast)
            assert gaps and max(gaps) <= 1000, gaps
            _assert_memory_released(m)
        finally:
            _abort(*(m.get(k) for k in ("fast", "slow", "trigger") if m.get(k)))
    run(body(), timeout=19)


# -- fast clients are not delayed by a slow one -------------------------------------------------

def test_fast_client_rpc_not_delayed_by_stalled_socket(gateway_server):
    # Limits high enough that the stalled socket is neither skipped nor closed: it keeps
    # accumulating a backlog in the gateway while the fast client talks to it.
    gw = gateway_server("--token", TOKEN, "--tick-interval-ms", str(TICK_MS),
                        "--max-buffered-bytes", str(1 << 30),
                        "--drop-if-slow-bytes", str(1 << 30))

    async def body():
        pid = gw.process.pid
        trigger = await _client(gw.url, "operator.admin")
        fast = await _client(gw.url, "operator.read")
        slow = await _client(gw.url, "operator.read", "operator.admin", rcvbuf=SMALL_RCVBUF)
        try:
            await _pump(trigger, [fast, slow, trigger])
            baseline = _rss(pid)
            slow_port = _stall(slow)
            # ~20 MB more than the kernel can hold stays in the gateway's write buffer.
            echo_ids = await _echo_backlog(slow, fast, _kernel_max(SMALL_RCVBUF) + 20 * MB,
                                           ECHO_CHUNK, "bp-rtt-mark")
            kernel_queued = sum(q for _, q in _server_side(gw.port, slow_port))
            backlog_rss = _rss(pid) - baseline
            assert kernel_queued > 64 * 1024, kernel_queued
            assert backlog_rss > 15 * MB, f"no user-space backlog? RSS +{backlog_rss / MB:.1f} MB"

            rtts = []
            for i in range(50):
                t0 = time.perf_counter()
                res = await _q(fast.call("system.echo", {"text": f"e{i}"}, timeout=5), "echo")
                rtts.append(time.perf_counter() - t0)
                assert res["ok"] is True and res["payload"]["text"] == f"e{i}", str(res)[:300]
            rtts.sort()
            p99 = rtts[math.ceil(0.99 * len(rtts)) - 1]
            assert p99 < 0.200, (f"system.echo p99 {p99 * 1000:.1f} ms, "
                                 f"median {rtts[25] * 1000:.1f} ms")
            await _pump(trigger, [fast, trigger])
            # Still stalled, still connected, still holding its backlog.
            assert _server_side_open(gw.port, slow_port)
            assert not slow.disconnected.is_set()

            _resume(slow)
            await _q(slow.barrier(timeout=15), "stalled reader catching up")
            assert _echoed(slow, echo_ids) == echo_ids
            _assert_gapless(slow, "stalled reader")
            _assert_gapless(fast, "fast reader")
            # Nothing was droppable at these limits: it got every presence the fast one did.
            assert _presence_versions(slow) == _presence_versions(fast)
            for ws in (fast, slow, trigger):
                await ws.close()
        finally:
            _abort(fast, slow, trigger)
    run(body(), timeout=19)


# -- chat deltas: skipped by a slow watcher, never the final --------------------------------

def test_a_slow_chat_watcher_skips_deltas_but_gets_the_final_without_a_seq_gap(gateway_server):
    gw = gateway_server("--token", TOKEN, "--tick-interval-ms", str(TICK_MS),
                        "--max-buffered-bytes", str(1 << 30),
                        "--drop-if-slow-bytes", str(DROP_BYTES))

    async def body():
        fast = await _client(gw.url, "operator.read")
        slow = await _client(gw.url, "operator.read", "operator.admin", rcvbuf=SMALL_RCVBUF)
        sender = await _client(gw.url, "operator.admin")
        try:
            _stall(slow)
            echo_ids = await _echo_backlog(slow, fast, _kernel_max(SMALL_RCVBUF) + 4 * DROP_BYTES,
                                           256 * 1024, "chat-drop-mark")
            message = " ".join(f"w{i}" for i in range(60))  # offline model: ~20 ms a word
            started = asyncio.get_running_loop().time()
            await _q(sender.call("chat.send", {"sessionKey": "agent:main:slow-watch",
                                               "message": message, "idempotencyKey": "sw-1"},
                                 timeout=10), "chat.send")
            final = await _q(fast.event("chat", timeout=30, pred=lambda e: e["payload"]["state"]
                                        == "final"), "final at the fast watcher")
            took = asyncio.get_running_loop().time() - started
            fast_deltas = [e for e in fast.events("chat") if e["payload"]["state"] == "delta"]
            assert len(fast_deltas) >= 3
            assert took < 15, "the stalled watcher slowed the run down"
            _resume(slow)
            await _q(slow.event("chat", timeout=60, pred=lambda e: e["payload"]["state"]
                                == "final"), "final at the slow watcher")
            await _q(slow.barrier(timeout=30), "slow watcher catching up")
            assert len(_echoed(slow, echo_ids)) == len(echo_ids)  # responses never dropped
            slow_chat = slow.events("chat")
            assert slow_chat[-1]["payload"]["message"] == final["payload"]["message"]
            assert len([e for e in slow_chat if e["payload"]["state"] == "delta"]) < len(fast_deltas)
            _assert_gapless(slow, "slow chat watcher")
            _assert_gapless(fast, "fast chat watcher")
        finally:
            _abort(fast, slow, sender)

    run(body(), timeout=120)
