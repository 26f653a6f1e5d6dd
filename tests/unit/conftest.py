"""Harness for driving the Sans-I/O connection state machine without sockets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from krabfast.connection import Connection
from krabfast.gateway.config import GatewayConfig
from krabfast.gateway.hub import Hub
from tests import refschema

FRAMES = Path(__file__).parent / "frames"


def recorded(name: str) -> bytes:
    """A frame captured from a real reference client (tests/unit/frames/)."""
    return (FRAMES / name).read_bytes().strip()


class FakeClock:
    def __init__(self) -> None:
        self.ms = 1_800_000_000_000
        self.mono = 1000.0

    def clock_ms(self) -> int:
        return self.ms

    def monotonic(self) -> float:
        return self.mono

    def advance(self, ms: int) -> None:
        self.ms += ms
        self.mono += ms / 1000


class RecordingSink:
    """Collects what the state machine writes; validates every frame against the
    reference schema as it is emitted."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.queued = 0
        self.deferred: list = []
        self.cancelled: list = []
        self.methods: dict[str, str] = {}

    def send(self, data: bytes) -> None:
        assert self.closed is None, "frame sent after close"
        frame = json.loads(data)
        refschema.check_frame(data, self.methods.get(frame.get("id")) if frame.get("type") == "res" else None)
        self.sent.append(data)

    def close(self, code: int, reason: str) -> None:
        assert self.closed is None, "closed twice"
        assert len(reason.encode()) <= 123
        self.closed = (code, reason)

    def buffered(self) -> int:
        return self.queued

    def defer(self, awaitable, done) -> None:
        self.deferred.append((awaitable, done))

    def cancel_deferred(self) -> None:
        self.cancelled = list(self.deferred)

    def frames(self) -> list[dict]:
        return [json.loads(b) for b in self.sent]

    def last(self) -> dict:
        return json.loads(self.sent[-1])

    def events(self, name: str | None = None) -> list[dict]:
        return [f for f in self.frames() if f["type"] == "event" and (name is None or f["event"] == name)]

    def response(self, req_id: str) -> dict:
        for f in self.frames():
            if f["type"] == "res" and f["id"] == req_id:
                return f
        raise AssertionError(f"no response {req_id}: {self.frames()}")


def connect_frame(req_id="c1", *, scopes=("operator.admin",), role="operator", token=None,
                  password=None, client_id="gateway-client", mode="backend", instance_id="inst-1",
                  **extra) -> bytes:
    params = {"minProtocol": 4, "maxProtocol": 4,
              "client": {"id": client_id, "version": "1.0.0", "platform": "linux", "mode": mode},
              "role": role, "scopes": list(scopes), "caps": []}
    if instance_id:
        params["client"]["instanceId"] = instance_id
    auth = {k: v for k, v in (("token", token), ("password", password)) if v is not None}
    if auth:
        params["auth"] = auth
    params.update(extra)
    return json.dumps({"type": "req", "id": req_id, "method": "connect", "params": params}).encode()


class Harness:
    def __init__(self, config: GatewayConfig | None = None) -> None:
        self.clock = FakeClock()
        self.config = config or GatewayConfig()
        self.hub = Hub(self.config, clock_ms=self.clock.clock_ms, monotonic=self.clock.monotonic)

    def open(self, *, peer_ip: str = "127.0.0.1", is_local: bool = True) -> tuple[Connection, RecordingSink]:
        sink = RecordingSink()
        conn = Connection(self.hub, sink, peer_ip=peer_ip, is_local=is_local)
        conn.start()
        return conn, sink

    def connected(self, *, peer_ip="127.0.0.1", is_local=True, **kw) -> tuple[Connection, RecordingSink]:
        conn, sink = self.open(peer_ip=peer_ip, is_local=is_local)
        conn.receive(connect_frame(**kw))
        res = sink.response(kw.get("req_id", "c1"))
        assert res["ok"], res
        return conn, sink

    @staticmethod
    def request(conn: Connection, sink: RecordingSink, method: str, params=None, req_id="r1") -> dict:
        frame = {"type": "req", "id": req_id, "method": method}
        if params is not None:
            frame["params"] = params
        sink.methods[req_id] = method
        conn.receive(json.dumps(frame).encode())
        return sink.response(req_id)


@pytest.fixture
def harness() -> Harness:
    return Harness()
