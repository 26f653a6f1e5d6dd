"""Micro-benchmarks of the frame path (pytest-benchmark). Not part of the default test run:

    python -m pytest benchmarks -q                            # compiled core
    KRABFAST_NO_EXTENSIONS=1 python -m pytest benchmarks -q   # pure-Python twin
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from krabfast._core import fanout, wire
from krabfast.connection import Connection
from krabfast.gateway.config import GatewayConfig
from krabfast.gateway.hub import Hub
from krabfast.protocol.handshake import ConnectParams

CONNECT = (Path(__file__).resolve().parents[1] / "tests/unit/frames/cli_connect_health.json").read_bytes().strip()
REQUEST = b'{"type":"req","id":"2:8bbb92f9-1ec3-4876-85de-cfeb208c23c2","method":"system.echo","params":{"text":"hello"}}'
_connect_params = msgspec.json.Decoder(ConnectParams)


class NullSink:
    """A socket that swallows what it is sent."""

    def send(self, data: bytes) -> None:
        pass

    def buffered(self) -> int:
        return 0

    def close(self, code: int, reason: str) -> None:
        pass


def test_decode_validate_connect(benchmark):
    def run():
        frame = wire.decode_frame(CONNECT)
        return _connect_params.decode(frame.params)

    assert benchmark(run).client.id == "cli"


def test_request_fast_path(benchmark):
    """decode + validate params + handler + encode + response, for a typical request."""
    hub = Hub(GatewayConfig())
    conn = Connection(hub, NullSink(), peer_ip="127.0.0.1", is_local=True)
    conn.start()
    conn.receive(b'{"type":"req","id":"c","method":"connect","params":{"minProtocol":4,"maxProtocol":4,'
                 b'"client":{"id":"cli","version":"1","platform":"linux","mode":"cli"},'
                 b'"scopes":["operator.read"]}}')
    receive = hub.dispatcher.receive
    assert receive(conn.call, REQUEST) is None  # answered on the fast path
    benchmark(receive, conn.call, REQUEST)


def test_encode_response(benchmark):
    body = wire.encode_json([{"ts": 1, "text": "hi"}] * 3)
    benchmark(wire.response_ok, "2:8bbb92f9-1ec3-4876-85de-cfeb208c23c2", body)


def test_fanout_10k(benchmark):
    class Sink:
        """An in-memory socket: keeps what it is sent, never backs up."""

        def __init__(self):
            self.out = []
            self.send = self.out.append

        def buffered(self):
            return 0

    sinks = [Sink() for _ in range(10_000)]
    subs = [fanout.Subscriber(s, None, 1) for s in sinks]
    prefix = wire.event_prefix("tick", b'{"ts":1795240457000}')
    suffix = wire.event_suffix(None)

    def run():
        for s in sinks:
            s.out.clear()
        fanout.fanout(prefix, suffix, subs, 0, True, 1 << 20, 1 << 26)

    benchmark(run)
