"""Load benchmarks for any OpenClaw-compatible gateway: `krabfast bench SCENARIO --url URL`.

Scenarios (parent orchestration in scenarios.py / soak.py, load in worker processes running
`python -m krabfast.bench.worker` with the lean picows client of loadclient.py):

- handshake: N connects at concurrency C (connect -> hello-ok -> close),
- rpc: C sockets x W requests in flight for S seconds,
- fanout: one `system-event` broadcast to N idle receivers, R times,
- idle: memory per held socket; optionally hold them and count ticks,
- soak: mixed load for S seconds, sampled every second.

Server CPU and RSS come from /proc for the process listening on the URL's port (or
--server-pid). `--vs-reference` runs the scenario against the reference gateway, krabfast
and a bare echo server, side by side.
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    """Register the `bench` subcommand on krabfast's argparse subparsers."""
    from krabfast.bench.cli import add_parser as _add

    _add(subparsers)
