"""The client log: one line per connect, disconnect and refused connect, rate limited."""

from __future__ import annotations

import logging

import pytest

from krabfast.gateway.clientlog import ClientLog
from krabfast.gateway.config import GatewayConfig
from tests.unit.conftest import Harness, connect_frame

LOGGER = "krabfast.clients"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Conn:
    """The fields of a Connection the log reads."""

    class client:
        id, mode, version = "cli", "cli", "1.2.3"

    peer_ip, role, conn_id, protocol, auth_method = "198.51.100.7", "operator", "b-1", 4, "token"
    scopes = frozenset({"operator.read"})
    device = None
    connected_at = 0


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)

    def get() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == LOGGER]
    return get


def test_bucket_limits_a_flood_and_reports_what_it_dropped(lines):
    clock = Clock()
    log = ClientLog(rate=2.0, burst=3, clock=clock)
    for _ in range(10):
        log.connected(Conn)
    assert len(lines()) == 3  # the burst; the other 7 are counted
    clock.now += 1.0  # two tokens back
    log.connected(Conn)
    got = lines()
    assert got[3] == "7 client connect lines suppressed (rate limit)", got
    assert got[4].startswith("client connected: cli/cli"), got
    # Kinds have their own buckets: a connect flood does not hide refusals.
    for _ in range(5):
        log.connected(Conn)
    log.disconnected(Conn)
    assert lines()[-1].startswith("client disconnected: cli/cli role=operator addr=198.51.100.7")
    log.flush()
    assert lines()[-1] == "4 client connect lines suppressed (rate limit)", lines()
    count = len(lines())
    log.flush()
    assert len(lines()) == count, "nothing new to report"


def test_nothing_is_counted_when_the_level_is_off(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    log = ClientLog(rate=1.0, burst=1, clock=Clock())
    for _ in range(5):
        log.connected(Conn)
    assert log.buckets["connect"].suppressed == 0 and not caplog.records


def test_client_supplied_text_is_bounded_and_printable(lines):
    from types import SimpleNamespace

    from krabfast.protocol.errors import ErrorCode, GatewayError

    log = ClientLog(clock=Clock())
    frame = SimpleNamespace(params=b'{"client":{"id":"evil\\nFAKE LINE","mode":"' + b"m" * 500
                            + b'"},"role":"node"}')
    log.refused(Conn, frame, GatewayError(ErrorCode.INVALID_REQUEST, "bad\nthing",
                                          details={"code": "AUTH_TOKEN_MISMATCH"}))
    line = lines()[-1]
    assert "\n" not in line and "evil?FAKE LINE/" in line and "m" * 65 not in line, line
    assert "role=node" in line and "code=AUTH_TOKEN_MISMATCH" in line, line
    log.refused(Conn, SimpleNamespace(params=b"[1]"), GatewayError(ErrorCode.INVALID_REQUEST, "x"))
    assert lines()[-1] == "client refused: ?/? role=? addr=198.51.100.7 code=INVALID_REQUEST: x"


def test_the_state_machine_logs_connect_refusal_and_disconnect(lines):
    h = Harness(GatewayConfig(auth_mode="token", token="T", state_dir=":memory:"))
    conn, sink = h.connected(token="T", client_id="cli", mode="cli", peer_ip="127.0.0.1")
    assert lines()[-1].startswith("client connected: cli/cli 1.0.0 role=operator "
                                  "scopes=operator.admin addr=127.0.0.1 auth=token protocol=4 conn="), lines()
    h.clock.advance(2500)
    conn.transport_closed()
    assert lines()[-1].startswith("client disconnected: cli/cli role=operator addr=127.0.0.1 conn=")
    assert lines()[-1].endswith("after 2.5 s"), lines()
    bad, sink = h.open(peer_ip="203.0.113.9", is_local=False)
    bad.receive(connect_frame(token="wrong", client_id="test", mode="test"))
    assert sink.closed[0] == 1008
    assert lines()[-1].startswith("client refused: test/test role=operator addr=203.0.113.9 "
                                  "code=AUTH_TOKEN_MISMATCH: unauthorized: gateway token mismatch")
    assert len(lines()) == 3  # the refused socket's close is not a second (disconnect) line
