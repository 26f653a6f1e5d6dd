"""Hostile input on real sockets, on both cores: deep nesting, oversized pre-connect frames,
invalid UTF-8, reserved bits, lone surrogates. Each gets a clean answer or close, the
gateway logs no traceback, and the socket of a well-behaved client is unaffected."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import time

import pytest
from picows import WSMsgType

from krabfast.gateway.config import GatewayConfig
from krabfast.gateway.server import GatewayServer
from tests.conftest import REPO, GatewayProcess, _port_open, _stop, free_port
from tests.integration.helpers import TOKEN, RawWS, connect_params, run

CORES = ["compiled", "pure"]


def _core_env(core: str) -> dict[str, str]:
    return {"KRABFAST_NO_EXTENSIONS": "1"} if core == "pure" else {}


@pytest.fixture(scope="module", params=CORES)
def any_core(request, gateway_server_module):
    return gateway_server_module("--token", TOKEN, env=_core_env(request.param))


@pytest.fixture(params=CORES)
def core(request):
    return request.param


@pytest.fixture(scope="module", params=CORES)
def faulty_core(request, tmp_path_factory):
    """A gateway process with bugs injected (tests/integration/faulty_gateway.py)."""
    tmp = tmp_path_factory.mktemp("faulty")
    port = free_port()
    log = tmp / "gateway.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KRABFAST_STATE_DIR": str(tmp / "state"),
           **_core_env(request.param)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.faulty_gateway", "gateway", "--port",
             str(port), "--bind", "127.0.0.1", "--token", TOKEN],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    proc.log_path = log
    gw = GatewayProcess(f"ws://127.0.0.1:{port}", port, proc)
    deadline = time.monotonic() + 15
    while not _port_open(port):
        assert proc.poll() is None and time.monotonic() < deadline, gw.output()
        time.sleep(0.05)
    yield gw
    _stop(proc)


def _frame(payload: bytes, *, opcode: int = 1, rsv: int = 0, announce: int | None = None) -> bytes:
    """A masked client frame; `announce` puts another length in the header."""
    length = len(payload) if announce is None else announce
    head = bytes([0x80 | (rsv << 4) | opcode])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _raw_write(ws: RawWS, data: bytes) -> None:
    ws.transport.underlying_transport.write(data)


def _no_traceback(gw) -> None:
    out = gw.output()
    assert "Traceback" not in out, out[-3000:]


async def _open(gw) -> RawWS:
    return await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.admin"])


def test_deeply_nested_params_get_invalid_request(any_core):
    async def body():
        ws = await _open(any_core)
        nested = b'{"type":"req","id":"deep","method":"system.echo","params":{"text":' + \
            b"[" * 5000 + b"]" * 5000 + b"}}"
        for _ in range(20):
            ws.send(nested)
        res = await ws.response("deep")
        assert res["error"]["code"] == "INVALID_REQUEST"
        assert "nested too deeply" in res["error"]["message"]
        assert (await ws.call("system.echo", {"text": "alive"}))["ok"]
        await ws.close()
        # Before connect: an answer, then 1008.
        pre = await RawWS.open(any_core.url)
        pre.send(b'{"type":"req","id":"c1","method":"connect","params":' + b"[" * 5000 +
                 b"]" * 5000 + b"}")
        code, _ = await pre.wait_closed()
        assert code == 1008
        assert pre.frames[-1]["error"]["code"] == "INVALID_REQUEST"
    run(body())
    _no_traceback(any_core)


def test_oversized_preconnect_frame_refused_from_its_header(any_core):
    async def body():
        ws = await RawWS.open(any_core.url)
        # Announce 20 MiB, send 1 KiB of it: the close must not wait for the rest.
        _raw_write(ws, _frame(b"x" * 1024, announce=20 << 20)[:1024 + 14])
        code, _ = await ws.wait_closed(3)
        assert code == 1009
        # A frame at the cap is still fine (it is just not a valid connect).
        ok = await RawWS.open(any_core.url)
        ok.send(json.dumps({"type": "req", "id": "c1", "method": "connect",
                            "params": connect_params(client_id="cli", mode="cli",
                                                     locale="y" * 1000)}))
        res = await ok.response("c1")
        assert res["ok"], res
        # After connect the large limit applies (the gate stepped aside).
        big = "z" * (1 << 20)
        assert (await ok.call("system.echo", {"text": big}, timeout=10))["payload"]["text"] == big
        await ok.close()
    run(body())


@pytest.mark.parametrize("where", ["client.version", "locale"])
def test_invalid_utf8_in_connect_closes_1007(any_core, where):
    async def body():
        params = connect_params(client_id="cli", mode="cli")
        marker = "@@BAD@@"
        if where == "locale":
            params["locale"] = marker
        else:
            params["client"]["version"] = marker
        raw = json.dumps({"type": "req", "id": "c1", "method": "connect", "params": params}).encode()
        ws = await RawWS.open(any_core.url)
        ws.send(raw.replace(marker.encode(), b"\xff\xfe"))
        code, _ = await ws.wait_closed()
        assert code == 1007
    run(body())
    _no_traceback(any_core)


@pytest.mark.parametrize("method,params", [
    ("health", None), ("status", None), ("system-presence", None),
    ("device.pair.remove", {"deviceId": "@@BAD@@"}),
    ("device.token.rotate", {"deviceId": "@@BAD@@", "role": "operator"}),
    ("node.invoke", {"nodeId": "@@BAD@@", "command": "x", "idempotencyKey": "k"}),
])
def test_invalid_utf8_after_connect_closes_1007(any_core, method, params):
    async def body():
        ws = await _open(any_core)
        frame = {"type": "req", "id": "u1", "method": method}
        frame["params"] = params if params is not None else {"x": "@@BAD@@"}
        raw = json.dumps(frame).encode().replace(b"@@BAD@@", b"a\xc3(b")
        ws.send(raw)
        code, _ = await ws.wait_closed()
        assert code == 1007
        assert not [f for f in ws.frames if f.get("id") == "u1"]
    run(body())
    _no_traceback(any_core)


def test_reserved_bits_close_1002(any_core):
    async def body():
        ws = await _open(any_core)
        _raw_write(ws, _frame(b'{"type":"req","id":"r","method":"health"}', rsv=4))
        code, _ = await ws.wait_closed()
        assert code == 1002
        assert not [f for f in ws.frames if f.get("id") == "r"]
    run(body())


def test_lone_surrogate_gets_an_answer(any_core):
    async def body():
        ws = await _open(any_core)
        ws.send(b'{"type":"req","id":"s1","method":"system.echo","params":{"text":"a\\ud800b"}}')
        res = await ws.response("s1")
        assert res["error"]["code"] == "INVALID_REQUEST" and "surrogate" in res["error"]["message"]
        ws.send(b'{"type":"req","id":"s\\udc00","method":"health"}')
        res = await ws.response("invalid")
        assert res["error"]["code"] == "INVALID_REQUEST"
        assert (await ws.call("system.echo", {"text": "paired \U0001d11e ok"}))["ok"]
        await ws.close()
        pre = await RawWS.open(any_core.url)
        params = json.dumps(connect_params(client_id="cli", mode="cli", locale="@@S@@")).encode()
        pre.send(b'{"type":"req","id":"c1","method":"connect","params":' +
                 params.replace(b"@@S@@", b"\\ud800") + b"}")
        code, _ = await pre.wait_closed()
        assert code == 1008 and pre.frames[-1]["id"] == "c1"
    run(body())
    _no_traceback(any_core)


def test_oversized_preconnect_frames_are_not_buffered(gateway_server, core):
    """32 sockets from 2 addresses each announce a 2 MiB frame before connect and send 1 MiB
    of it: every one is closed 1009 before the rest is sent, the gateway's peak RSS does
    not grow by what they sent, and an authenticated client is served meanwhile."""
    gw = gateway_server("--token", TOKEN, env=_core_env(core))

    async def body():
        good = await _open(gw)
        socks = [await RawWS.open(gw.url, local_addr=(addr, 0))
                 for addr in ("127.0.0.1", "127.0.0.2") for _ in range(16)]
        await good.call("health")
        before = _peak_rss_kib(gw)
        part = b"x" * (1 << 20)
        start = time.monotonic()
        for ws in socks:
            _raw_write(ws, _frame(b"", announce=2 << 20) + part)
        rtt = time.monotonic()
        assert (await good.call("health", timeout=10))["ok"]
        rtt = time.monotonic() - rtt
        for ws in socks:
            code, _ = await ws.wait_closed(5)
            assert code == 1009
        elapsed = time.monotonic() - start
        grown = _peak_rss_kib(gw) - before
        assert grown < 8 * 1024, f"peak RSS grew {grown} KiB for 32 MiB sent"
        assert elapsed < 3 and rtt < 1, (elapsed, rtt)
        await good.close()
    run(body())
    _no_traceback(gw)



def _peak_rss_kib(gw) -> int:
    with open(f"/proc/{gw.process.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_binary_and_fragmented_text_are_checked_as_whole_messages(any_core):
    async def body():
        # A character split across two fragments is fine; the message is checked whole.
        ws = await _open(any_core)
        text = json.dumps({"type": "req", "id": "f1", "method": "system.echo",
                           "params": {"text": "caf\u00e9"}}, ensure_ascii=False).encode()
        cut = text.index("\u00e9".encode()) + 1
        ws.transport.send(WSMsgType.TEXT, text[:cut], fin=False)
        ws.transport.send(WSMsgType.CONTINUATION, text[cut:], fin=True)
        assert (await ws.response("f1"))["payload"]["text"] == "caf\u00e9"
        ws.send(b'{"type":"req","id":"b1","method":"health"}', WSMsgType.BINARY)
        assert (await ws.response("b1"))["ok"]
        ws.transport.send(WSMsgType.TEXT, b'{"type":"req","id":"f2","method":"he', fin=False)
        ws.transport.send(WSMsgType.CONTINUATION, b'\xc3(alth"}', fin=True)
        assert (await ws.wait_closed())[0] == 1007
        ws = await _open(any_core)
        ws.send(b'{"type":"req","id":"b2","method":"h\xffealth"}', WSMsgType.BINARY)
        assert (await ws.wait_closed())[0] == 1007
        assert not [f for f in ws.frames if f.get("id") == "b2"]
        pre = await RawWS.open(any_core.url)
        pre.send(b'{"type":"req","id":"c1","method":"c\xffonnect"}', WSMsgType.BINARY)
        assert (await pre.wait_closed())[0] == 1007
    run(body())
    _no_traceback(any_core)


def test_reserved_bits_before_connect_close_1002(any_core):
    async def body():
        pre = await RawWS.open(any_core.url)
        _raw_write(pre, _frame(json.dumps({"type": "req", "id": "c1", "method": "connect",
                                           "params": connect_params()}).encode(), rsv=2))
        assert (await pre.wait_closed())[0] == 1002
        assert not [f for f in pre.frames if f.get("id") == "c1"]
    run(body())


def test_protocol_violations_are_logged_rate_limited(any_core):
    """picows reports each peer's protocol violation (here: unmasked frames); a client
    repeating one cannot flood the log."""
    async def body():
        for _ in range(40):
            ws = await RawWS.open(any_core.url)
            _raw_write(ws, b"\x81\x02{}")  # no mask bit: RFC 6455 5.1
            await ws.wait_closed()
    run(body())
    out = any_core.output()
    assert "Traceback" not in out
    assert 1 <= out.count("un-masked") <= 2, out[-3000:]


def test_a_bug_serving_a_frame_is_answered_and_logged_once(faulty_core):
    """A bug while serving a client's frame (injected: the dispatcher, the general request
    path, connect) answers UNAVAILABLE and keeps the socket, or closes 1011 before connect,
    with one rate-limited log line and no traceback, however many frames trip it."""
    async def body():
        ws = await _open(faulty_core)
        for i in range(300):
            ws.send({"type": "req", "id": f"boom-dispatch-{i}", "method": "health"})
        for i in range(300):
            res = await ws.response(f"boom-dispatch-{i}")
            assert res["error"] == {"code": "UNAVAILABLE", "message": "internal error"}, res
        ws.send({"type": "req", "id": "boom-rest-1", "method": "system-event",
                 "params": {"text": "t", "idempotencyKey": "k"}})
        assert (await ws.response("boom-rest-1"))["error"]["code"] == "UNAVAILABLE"
        assert (await ws.call("health"))["ok"]
        assert ws.close_code is None
        await ws.close()
        pre = await RawWS.open(faulty_core.url)
        pre.send({"type": "req", "id": "boom-connect", "method": "connect",
                  "params": connect_params(client_id="cli", mode="cli")})
        assert (await pre.wait_closed())[0] == 1011
        assert pre.frames[-1]["error"]["code"] == "UNAVAILABLE"
        assert (await _open(faulty_core)).hello  # the listener still serves new sockets
    run(body())
    out = faulty_core.output()
    assert "Traceback" not in out, out[-3000:]
    lines = [line for line in out.splitlines() if "injected" in line]
    assert 1 <= len(lines) <= 2, lines


def test_failed_upgrades_leave_nothing_behind():
    """picows asks for a listener before it validates the upgrade request; a request that
    then fails (a bad upgrade), or plain HTTP (served by the HTTP side), must not stay
    tracked."""
    async def body():
        srv = GatewayServer(GatewayConfig(port=0, bind="127.0.0.1", state_dir=":memory:"))
        await srv.start()
        try:
            for head, answer in (
                    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     b"HTTP/1.1 200"),
                    (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n", b"HTTP/1.1 400")):
                for _ in range(20):
                    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
                    writer.write(head)
                    assert (await reader.read()).startswith(answer)
                    writer.close()
            await asyncio.sleep(0.1)
            assert not srv.listeners and not srv.hub.directory.preauth_by_ip
        finally:
            await srv.stop()
    run(body())
