"""Micro-benchmarks of the frame path (pytest-benchmark). Not part of the default test run:

    python -m pytest benchmarks -q            # compiled core
    KRABFAST_NO_EXTENSIONS=1 python -m pytest benchmarks -q   # pure-Python twin
"""

from __future__ import annotations

from pathlib import Path

from krabfast._core import fanout, wire

CONNECT = (Path(__file__).resolve().parents[1] / "tests/unit/frames/cli_connect_health.json").read_bytes().strip()
REQUEST = b'{"type":"req","id":"2:8bbb92f9-1ec3-4876-85de-cfeb208c23c2","method":"system-presence","params":{}}'


def test_decode_connect(benchmark):
    benchmark(wire.decode_frame, CONNECT)


def test_decode_request(benchmark):
    benchmark(wire.decode_frame, REQUEST)


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
