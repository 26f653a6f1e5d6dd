"""The pre-connect gate parts the port's two protocols: a first request head with an
Upgrade header stays with picows; any other goes to the HTTP protocol with every byte read
so far (both cores: the compiled gate and its uncompiled source)."""

from __future__ import annotations

import pytest

import krabfast._core as core

SOURCES = core.load_sources()
GATES = [SOURCES.gate] + ([core.gate] if core.COMPILED else [])

UPGRADE = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
PLAIN = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHo"


class Inner:
    """Stands in for picows' protocol (or the HTTP one): records what reaches it."""

    def __init__(self) -> None:
        self.buf = bytearray(256 * 1024)
        self.fed = bytearray()
        self.calls: list[str] = []

    def connection_made(self, transport) -> None:
        self.calls.append("made")

    def connection_lost(self, exc) -> None:
        self.calls.append("lost")

    def get_buffer(self, sizehint):
        return memoryview(self.buf)

    def buffer_updated(self, nbytes) -> None:
        self.fed += self.buf[:nbytes]

    def feed(self, data) -> None:
        self.calls.append("feed")
        self.fed += data

    def eof_received(self):
        self.calls.append("eof")


class Transport:
    def is_closing(self) -> bool:
        return False

    def write(self, data) -> None:
        raise AssertionError("the gate wrote to the socket")


def _read(gate, data: bytes) -> None:
    view = gate.get_buffer(len(data))
    view[:len(data)] = data
    gate.buffer_updated(len(data))


@pytest.mark.parametrize("gate_mod", GATES)
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_a_plain_request_goes_to_http_with_every_byte(gate_mod, chunk):
    picows, https = Inner(), []

    def http():
        https.append(Inner())
        return https[-1]

    gate = gate_mod.PreauthGate(picows, 65536, http)
    gate.connection_made(Transport())
    for i in range(0, len(PLAIN), chunk):
        _read(gate, PLAIN[i:i + chunk])
    assert len(https) == 1
    proto = https[0]
    assert picows.calls == ["made", "lost"]  # let go, having been told nothing more
    assert proto.calls[:2] == ["made", "feed"]
    assert bytes(proto.fed) == PLAIN  # the head, the next request's start, in order
    _read(gate, b"st: x\r\n\r\n")  # later reads go straight to the HTTP protocol
    assert bytes(proto.fed) == PLAIN + b"st: x\r\n\r\n"
    gate.eof_received()
    gate.connection_lost(None)
    assert proto.calls[-2:] == ["eof", "lost"] and picows.calls == ["made", "lost"]


@pytest.mark.parametrize("gate_mod", GATES)
@pytest.mark.parametrize("head", [UPGRADE, UPGRADE.replace(b"Upgrade:", b"uPgRaDe:")])
def test_an_upgrade_stays_with_picows(gate_mod, head):
    picows = Inner()
    gate = gate_mod.PreauthGate(picows, 65536, lambda: pytest.fail("handed to HTTP"))
    gate.connection_made(Transport())
    _read(gate, head)
    assert bytes(picows.fed) == head and picows.calls == ["made"]


@pytest.mark.parametrize("gate_mod", GATES)
def test_an_oversized_head_without_upgrade_goes_to_http(gate_mod):
    picows, https = Inner(), []
    gate = gate_mod.PreauthGate(picows, 65536, lambda: https.append(Inner()) or https[-1])
    gate.connection_made(Transport())
    big = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000
    _read(gate, big)
    assert len(https) == 1 and bytes(https[0].fed) == big  # HTTP answers 431


@pytest.mark.parametrize("gate_mod", GATES)
def test_without_an_http_factory_everything_stays_with_picows(gate_mod):
    picows = Inner()
    gate = gate_mod.PreauthGate(picows, 65536)
    gate.connection_made(Transport())
    _read(gate, PLAIN)
    assert bytes(picows.fed) == PLAIN and picows.calls == ["made"]


@pytest.mark.parametrize("gate_mod", GATES)
@pytest.mark.parametrize("extra,expected", [
    (b"", False), (b"X-Forwarded-For: 1.2.3.4\r\n", True), (b"x-forwarded-proto: https\r\n", True),
    (b"Forwarded: for=1.2.3.4\r\n", True), (b"X-Real-IP: 1.2.3.4\r\n", True),
    (b"X-Forwarded: no dash suffix\r\n", False), (b"X-Not-Forwarded-For: 1\r\n", False)])
def test_the_gate_notes_forwarding_headers_of_an_upgrade(gate_mod, extra, expected):
    """What the listener factory reads to apply trusted proxies (no walk of the headers)."""
    picows = Inner()
    gate = gate_mod.PreauthGate(picows, 65536, lambda: pytest.fail("handed to HTTP"))
    gate.connection_made(Transport())
    _read(gate, UPGRADE[:-2] + extra + b"\r\n")
    assert gate.forwarded is expected
