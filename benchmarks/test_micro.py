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
    sink = []
    subs = [fanout.Subscriber(sink.append, lambda: 0, lambda: None, 1) for _ in range(10_000)]
    prefix = wire.event_prefix("tick", b'{"ts":1795240457000}')
    suffix = wire.event_suffix(None)

    def run():
        sink.clear()
        fanout.fanout(prefix, suffix, subs, 0, True, 1 << 20, 1 << 26)

    benchmark(run)
