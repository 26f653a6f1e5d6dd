"""Hostile input on real sockets, on both cores: deep nesting, oversized pre-connect frames,
invalid UTF-8, reserved bits, lone surrogates. Each gets a clean answer or close, the
gateway logs no traceback, and the socket of a well-behaved client is unaffected."""

from __future__ import annotations

import asyncio
import json
import os
import struct

import pytest

from tests.integration.helpers import TOKEN, RawWS, connect_params, run


@pytest.fixture(scope="module", params=["compiled", "pure"])
def any_core(request, gateway_server_module):
    env = {"KRABFAST_NO_EXTENSIONS": "1"} if request.param == "pure" else {}
    return gateway_server_module("--token", TOKEN, env=env)


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
