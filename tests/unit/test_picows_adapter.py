"""krabfast/gateway/picows_adapter.py: its probes fall back to public-only behaviour (one
warning line), and on this picows both cores release the upgrade request/response after
connect, behind the pre-connect gate."""

from __future__ import annotations

import asyncio
import logging

import picows
import pytest
import uvloop
from picows import WSUpgradeRequest, WSUpgradeResponse

import krabfast._core
from krabfast.bench.loadclient import connect_frame
from krabfast.bench.rawclient import masked_text_frame, upgrade_request
from krabfast.gateway import picows_adapter as adapter
from krabfast.gateway import server as server_mod
from krabfast.gateway.config import GatewayConfig
from krabfast.gateway.server import GatewayServer


@pytest.fixture
def fresh_probes(monkeypatch):
    monkeypatch.setattr(adapter, "picows_fallbacks", set())
    monkeypatch.setattr(adapter, "_release_ok", True)


def _upgrade_pair():
    request = WSUpgradeRequest()
    request.method, request.path, request.version = b"GET", b"/", b"HTTP/1.1"
    request.headers = {"Host": "x"}
    return request, WSUpgradeResponse.create_101_response()


class _Transport:
    def __init__(self, request, response):
        self.request, self.response = request, response


class _TransportWithoutResponse:
    """A picows whose transport no longer keeps the upgrade response."""

    def __init__(self, request):
        self.request = request


def test_release_empties_the_upgrade_request_and_response(fresh_probes):
    request, response = _upgrade_pair()
    assert adapter.release_upgrade(_Transport(request, response))
    assert (request.headers, request.path, request.method, request.version) == (None,) * 4
    assert (response.headers, response.body, response.version) == (None,) * 3
    assert adapter.release_upgrade(_Transport(None, None))  # a client-less edge: nothing kept
    assert not adapter.picows_fallbacks


def test_release_probe_detects_a_missing_field_and_falls_back(fresh_probes, caplog):
    request, _ = _upgrade_pair()
    with caplog.at_level(logging.WARNING, "krabfast.gateway"):
        assert not adapter.release_upgrade(_TransportWithoutResponse(request))
        assert request.headers == {"Host": "x"}  # left as it is: memory, not correctness
        # Later sockets, even complete ones, are left alone too, and nothing more is logged.
        request2, response2 = _upgrade_pair()
        assert not adapter.release_upgrade(_Transport(request2, response2))
        assert response2.headers is not None
    assert adapter.picows_fallbacks == {"upgrade release"}
    assert len([r for r in caplog.records if "falling back" in r.getMessage()]) == 1


def test_release_probe_detects_a_missing_attribute_of_the_request(fresh_probes):
    class OldRequest:
        __slots__ = ("headers",)

    req = OldRequest()
    req.headers = {}
    assert not adapter.release_upgrade(_Transport(req, None))
    assert req.headers == {}


def test_write_buffer_shrink_only_on_verified_picows(fresh_probes, monkeypatch, caplog):
    assert adapter.write_buffer_shrink_ok((2, 3, 0)) and adapter.write_buffer_shrink_ok((2, 3, 1))
    assert not adapter.write_buffer_shrink_ok((2, 4, 0))
    assert not adapter.write_buffer_shrink_ok((2, 2, 0))
    assert adapter._version("2.4.0rc1") == (2, 4, 0) and adapter._version("3") == (3,)
    size = picows.WSTransport.__basicsize__
    assert not adapter.check_write_buffer(False, size)  # the pure core never does it
    assert not adapter.picows_fallbacks
    with caplog.at_level(logging.WARNING, "krabfast.gateway"):
        # A core compiled against another picows layout: never write the field.
        assert not adapter.check_write_buffer(True, size + 8)
        assert adapter.picows_fallbacks == {"write buffer"}
        monkeypatch.setattr(adapter, "SHRINK_WRITE_BUFFER", False)  # an unverified release
        assert not adapter.check_write_buffer(True, size)
    assert len([r for r in caplog.records if "falling back" in r.getMessage()]) == 1
    monkeypatch.setattr(adapter, "SHRINK_WRITE_BUFFER", True)
    assert adapter.check_write_buffer(True, size)


# -- in-process gateway ----------------------------------------------------------------------

async def _connected_socket(port: int):
    """Open, upgrade and connect one socket; returns (reader, writer) once hello-ok came."""
    _host, _port, request = upgrade_request(f"ws://127.0.0.1:{port}/")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    sent = False
    buf = b""
    while True:
        buf += await asyncio.wait_for(reader.read(65536), 5)
        while len(buf) >= 2:
            n, start = buf[1] & 0x7F, 2
            if n == 126:
                n, start = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                n, start = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < start + n:
                break
            payload, buf = buf[start:start + n], buf[start + n:]
            if not sent:  # connect.challenge
                writer.write(masked_text_frame(connect_frame(None)))
                sent = True
            elif payload.startswith(b'{"type":"res"'):
                assert b'"ok":true' in payload, payload
                return reader, writer


async def _oversized_preconnect_frame(port: int) -> bytes:
    _host, _port, request = upgrade_request(f"ws://127.0.0.1:{port}/")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # The upgrade and a frame header announcing 1 MiB, in one write: the gate refuses it
    # from the header alone.
    writer.write(request + bytes((0x81, 0x80 | 127)) + (1 << 20).to_bytes(8, "big") + b"\0" * 4)
    data = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            data += chunk
    finally:
        writer.close()
    return data


def _cores():
    cores = [("loaded", krabfast._core.listener)]
    if krabfast._core.COMPILED:
        cores.append(("sources", krabfast._core.load_sources().listener))
    return cores


@pytest.mark.parametrize("core", _cores(), ids=lambda c: c[0])
def test_both_cores_release_the_upgrade_after_connect(core, monkeypatch, fresh_probes):
    _name, listener_mod = core
    monkeypatch.setattr(server_mod, "_listener", listener_mod)
    compiled = listener_mod.built_transport_size() != 0

    async def main():
        gw = GatewayServer(GatewayConfig(bind="127.0.0.1", port=0))
        await gw.start()
        try:
            assert gw.gated, adapter.picows_fallbacks  # the gate is in front of picows
            assert gw.shrink_write_buffer == (compiled and adapter.SHRINK_WRITE_BUFFER)
            _reader, writer = await _connected_socket(gw.port)
            (listener,) = gw.listeners
            assert isinstance(listener, listener_mod.FrameListener)
            assert listener.peer_ip == "127.0.0.1" and listener.is_local
            transport = listener.sink.transport
            request, response = transport.request, transport.response
            assert request is None or request.headers is None
            assert response is None or (response.headers is None and response.body is None)
            # The socket still works after the staging buffer was replaced: ping -> pong.
            writer.write(bytes((0x89, 0x84)) + b"\0\0\0\0" + b"abcd")
            reply = await asyncio.wait_for(_reader.readexactly(6), 5)
            assert reply == b"\x8a\x04abcd"
            writer.close()
        finally:
            await gw.stop()
        # On a picows release the staging-buffer write is not verified for, that one falls
        # back (.ci/run's newest-dependency step says so); nothing else may.
        assert adapter.picows_fallbacks <= (set() if adapter.SHRINK_WRITE_BUFFER or not compiled
                                            else {"write buffer"})

    uvloop.run(main())


def test_the_gate_refuses_an_oversized_preconnect_frame_from_its_header(fresh_probes):
    async def main():
        gw = GatewayServer(GatewayConfig(bind="127.0.0.1", port=0))
        await gw.start()
        try:
            data = await _oversized_preconnect_frame(gw.port)
        finally:
            await gw.stop()
        # Refused in the read that brought it, before picows saw any of it (no 101 even).
        assert data == b"\x88\x02\x03\xf1"  # close 1009

    uvloop.run(main())


def test_without_the_captured_factory_the_server_falls_back_to_ws_create_server(
        fresh_probes, monkeypatch, caplog):
    monkeypatch.setattr(adapter, "capture_protocol_factory", lambda *a: None)

    async def main():
        gw = GatewayServer(GatewayConfig(bind="127.0.0.1", port=0))
        with caplog.at_level(logging.WARNING, "krabfast.gateway"):
            await gw.start()
        try:
            assert not gw.gated
            _reader, writer = await _connected_socket(gw.port)
            (listener,) = gw.listeners
            assert listener.peer_ip == "127.0.0.1" and listener.is_local  # learnt in attach
            assert listener.sink.transport.request.headers is None
            writer.close()
        finally:
            await gw.stop()

    uvloop.run(main())
    assert "server protocols" in adapter.picows_fallbacks
    assert len([r for r in caplog.records if "falling back" in r.getMessage()]) == 1
