"""A bug while serving one client's frame, through the Sans-I/O state machine: a clean
answer (UNAVAILABLE, or 1011 before connect), one rate-limited log line without a
traceback, and the connection keeps working. (Over real sockets, on both cores:
tests/integration/test_hostile_input.py.)"""

from __future__ import annotations

import json
import logging

import pytest

from krabfast import connection
from krabfast.protocol.errors import ErrorCode, GatewayError
from tests.unit.conftest import connect_frame

UNAVAILABLE = {"code": "UNAVAILABLE", "message": "internal error"}


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    connection.error_log.reset()
    yield
    connection.error_log.reset()


class _Faulty:
    def __init__(self, inner, exc: BaseException) -> None:
        self.inner, self.exc = inner, exc

    def receive(self, conn, data):
        if b'"boom' in data:
            raise self.exc
        return self.inner.receive(conn, data)


def _lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "krabfast.connection"]


def test_dispatcher_bug_answers_unavailable_once_logged(harness, caplog):
    conn, sink = harness.connected()
    harness.hub.dispatcher = _Faulty(harness.hub.dispatcher, RuntimeError("bug"))
    for i in range(50):
        conn.receive(json.dumps({"type": "req", "id": f"boom{i}", "method": "health"}).encode())
        assert sink.response(f"boom{i}")["error"] == UNAVAILABLE
    assert sink.closed is None
    assert harness.request(conn, sink, "health", req_id="h1")["ok"]
    lines = _lines(caplog)
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "RuntimeError: bug" in lines[0].getMessage()


def test_bug_in_a_dispatch_outcome_and_gateway_errors(harness, caplog, monkeypatch):
    conn, sink = harness.connected()

    def broken(self, req_id, method):
        if req_id == "boom-gw":
            raise GatewayError(ErrorCode.INVALID_REQUEST, "refused late")
        raise KeyError("bug")

    monkeypatch.setattr(connection.Connection, "unknown_method", broken)
    conn.receive(b'{"type":"req","id":"boom1","method":"no.such.method"}')
    assert sink.response("boom1")["error"] == UNAVAILABLE
    conn.receive(b'{"type":"req","id":"boom-gw","method":"no.such.method"}')
    assert sink.response("boom-gw")["error"] == {"code": "INVALID_REQUEST", "message": "refused late"}
    assert sink.closed is None
    assert len(_lines(caplog)) == 1


def test_recursion_past_decoding_is_a_nesting_answer(harness, caplog):
    conn, sink = harness.connected()
    harness.hub.dispatcher = _Faulty(harness.hub.dispatcher, RecursionError("deep"))
    conn.receive(b'{"type":"req","id":"boom","method":"health"}')
    assert "nested too deeply" in sink.response("boom")["error"]["message"]
    assert not _lines(caplog) and sink.closed is None


def test_connect_bug_answers_then_closes_1011(harness, caplog, monkeypatch):
    def broken(self, frame):
        raise ValueError("bug")

    monkeypatch.setattr(connection.Connection, "_connect", broken)
    conn, sink = harness.open()
    conn.receive(connect_frame())
    assert sink.response("c1")["error"] == UNAVAILABLE
    assert sink.closed == (1011, "internal error")
    assert not harness.hub.directory.handshakes and not harness.hub.directory.preauth_by_ip
    lines = _lines(caplog)
    assert len(lines) == 1 and lines[0].exc_info is None


def test_frame_failed_before_connect_closes(harness, caplog):
    # What the socket listener does when receive_text raised (it should not; belt and braces).
    conn, sink = harness.open()
    conn.frame_failed(connect_frame(), RuntimeError("bug"))
    assert sink.closed == (1011, "internal error") and len(_lines(caplog)) == 1
    conn2, sink2 = harness.open()
    conn2.frame_failed(connect_frame(), RecursionError())
    assert sink2.closed[0] == 1008
    conn3, sink3 = harness.open()
    conn3.frame_failed(b'{"type":"req","id":"c1","method":"conn\xffect"}', RuntimeError("bug"))
    assert sink3.closed[0] == 1007
    conn3.frame_failed(b"{}", RuntimeError("after close"))  # closed: nothing more happens
    assert len(sink3.sent) == 1


def test_receive_rejects_invalid_utf8_in_both_states(harness):
    pre, pre_sink = harness.open()
    pre.receive(b'{"type":"req","id":"c1","method":"connect","params":{"locale":"\xc3("}}')
    assert pre_sink.closed[0] == 1007 and len(pre_sink.sent) == 1  # the challenge only
    conn, sink = harness.connected()
    conn.receive(b'{"type":"req","id":"x","method":"health"}\xed\xa0\x80', binary=True)
    assert sink.closed[0] == 1007
