"""The hub's seams and the method contract: event bus topics, connection directory, the
call context handlers get, `Reply`, request tasks bounded per socket, plugin methods."""

from __future__ import annotations

import json
import logging
import sys

import msgspec
import pytest

from krabfast import methods as M
from krabfast.connection import MAX_INFLIGHT_PER_SOCKET, Call
from krabfast.gateway.bus import ALL
from krabfast.gateway.config import GatewayConfig
from krabfast.gateway.hub import Hub
from krabfast.protocol.methods import MethodSpec, MethodTable, Reply
from krabfast.protocol.system import SystemEchoParams, SystemEchoResult
from tests.unit.conftest import Harness, connect_frame


def _req(conn, sink, method, params=None, req_id="r1"):
    frame = {"type": "req", "id": req_id, "method": method}
    if params is not None:
        frame["params"] = params
    sink.methods[req_id] = method
    conn.receive(json.dumps(frame).encode())


# -- event bus --------------------------------------------------------------------------------
def test_a_topic_reaches_only_its_subscribers(harness):
    a, sa = harness.connected(instance_id="a")
    b, sb = harness.connected(instance_id="b")
    c, sc = harness.connected(instance_id="c")
    bus = harness.hub.bus
    assert bus.subscribe("agent:main:s1", a.conn_id) and bus.subscribe("agent:main:s1", b.conn_id)
    assert not bus.subscribe("agent:main:s1", "no-such-conn")
    counts = [len(s.sent) for s in (sa, sb, sc)]
    assert bus.publish("tick", {"ts": 1}, topic="agent:main:s1") == 2
    assert [len(s.sent) - n for s, n in zip((sa, sb, sc), counts)] == [1, 1, 0]
    # Each subscriber's seq continues its own stream.
    assert sa.last()["seq"] == max(f.get("seq", 0) for f in sa.frames())
    assert bus.count("agent:main:s1") == 2 and bus.count(ALL) == 3
    b.close(1000, "")
    assert bus.count("agent:main:s1") == 1 and bus.topics_of(b.conn_id) == frozenset()
    assert bus.unsubscribe("agent:main:s1", a.conn_id)
    assert bus.count("agent:main:s1") == 0 and bus.publish("tick", {"ts": 2}, topic="agent:main:s1") == 0


def test_publish_keeps_each_events_scope_on_a_topic(harness):
    reader, sr = harness.connected(scopes=["operator.read"], instance_id="r")
    pairer, sp = harness.connected(scopes=["operator.pairing"], instance_id="p")
    bus = harness.hub.bus
    for conn in (reader, pairer):
        bus.subscribe("t", conn.conn_id)
    before = len(sr.sent), len(sp.sent)
    assert bus.publish("device.pair.changed", {}, topic="t") == 1  # operator.pairing only
    assert (len(sr.sent), len(sp.sent)) == (before[0], before[1] + 1)


# -- connection directory ---------------------------------------------------------------------
class _FakeConn:
    def __init__(self, conn_id, device_id, role="operator"):
        self.conn_id, self.peer_ip, self.role = conn_id, "10.0.0.1", role
        self.device = msgspec.structs.replace(_DEVICE, id=device_id) if device_id else None
        self.closed = None

    def close(self, code, reason):
        self.closed = (code, reason)


from krabfast.protocol.handshake import DeviceAuth  # noqa: E402

_DEVICE = DeviceAuth(id="d", public_key="k", signature="s", signed_at=1, nonce="n")


def test_directory_finds_and_closes_a_devices_sockets():
    from krabfast.gateway.directory import ConnectionDirectory

    d = ConnectionDirectory()
    conns = [_FakeConn("1", "dev-a"), _FakeConn("2", "dev-a", "node"), _FakeConn("3", "dev-b"),
             _FakeConn("4", None)]
    for c in conns:
        d.add(c)
    assert d.preauth_count("10.0.0.1") == 4 and d.open_count() == 0
    for c in conns:
        d.opened(c)
    assert d.preauth_count("10.0.0.1") == 0 and d.open_count() == 4
    assert d.device_connected("dev-a") and not d.device_connected("dev-c")
    assert d.close_device("dev-a", "operator", 4001, "device removed") == 1
    assert conns[0].closed == (4001, "device removed") and conns[1].closed is None
    d.remove(conns[1], True)
    assert [c.conn_id for c in d.device_sockets("dev-a")] == ["1"]
    d.remove(conns[0], True)
    assert not d.device_connected("dev-a") and d.open_count() == 2


# -- the call context and Reply ---------------------------------------------------------------
def test_handlers_get_a_call_context_not_the_connection(harness):
    seen = []

    def handler(call, params):
        seen.append(call)
        return SystemEchoResult(ok=True, text=params.text)

    harness.hub.set_method(M.METHODS["system.echo"], handler)
    conn, sink = harness.connected(scopes=["operator.read"])
    _req(conn, sink, "system.echo", {"text": "hi"})
    assert sink.response("r1")["ok"]
    call = seen[0]
    assert type(call) is Call and call is conn.call
    assert not hasattr(call, "sink") and not hasattr(call, "close") and not hasattr(call, "hub")
    assert (call.role, call.scopes, call.conn_id) == ("operator", frozenset({"operator.read"}),
                                                      conn.conn_id)
    assert call.services is harness.hub.services


def test_reply_after_runs_once_the_answer_is_out(harness):
    conn, sink = harness.connected()
    order = []

    def handler(call, params):
        return Reply(SystemEchoResult(ok=True, text=params.text),
                     lambda: order.append([json.loads(f)["id"] for f in sink.sent
                                           if json.loads(f).get("type") == "res"]))

    harness.hub.set_method(M.METHODS["system.echo"], handler)
    _req(conn, sink, "system.echo", {"text": "x"}, req_id="e1")
    assert order == [["c1", "e1"]]  # after() saw its own answer already sent
    assert sink.response("e1")["payload"] == {"ok": True, "text": "x"}


def test_an_idempotent_replay_does_not_run_after_again(harness):
    conn, sink = harness.connected()
    runs = []

    def handler(call, params):
        return Reply({"ok": True}, lambda: runs.append(1))

    harness.hub.set_method(M.METHODS["system-event"], handler)
    for rid in ("a", "b"):
        _req(conn, sink, "system-event", {"text": "t", "idempotencyKey": "k"}, req_id=rid)
        assert sink.response(rid)["payload"] == {"ok": True}
    assert runs == [1]


# -- one authorization path -------------------------------------------------------------------
@pytest.mark.parametrize("params", [{"text": "t"}, {"text": "t", "idempotencyKey": "k"}])
def test_the_same_rule_whatever_path_the_call_takes(harness, params):
    # A keyed call leaves the plain path; it must be refused exactly the same way.
    conn, sink = harness.connected(scopes=["operator.read"])
    _req(conn, sink, "system-event", params)
    assert sink.response("r1")["error"]["details"]["missingScope"] == "operator.admin"
    assert list(harness.hub.system_events) == []


def test_a_scope_without_a_bit_is_admin_business(harness):
    # Unknown operator.* scopes are dropped at connect (as on the reference), so a method
    # declared with one is served to admins only; other roles never.
    spec = MethodSpec("custom.thing", None, None, "operator.custom", handler=lambda c, p: {"ok": 1},
                      summary="x")
    harness.hub.add_methods([spec])
    for scopes, ok in ((["operator.read"], False), (["operator.custom"], False),
                       (["operator.admin"], True)):
        conn, sink = harness.connected(scopes=scopes, client_id="cli", mode="cli")
        _req(conn, sink, "custom.thing")
        assert sink.response("r1")["ok"] is ok, scopes


# -- request tasks ----------------------------------------------------------------------------
def test_request_tasks_are_bounded_per_socket_and_cancelled_on_close(harness):
    async def forever(call, params):
        raise AssertionError("never run by the recording sink")

    harness.hub.set_method(M.METHODS["system.echo"], forever)
    conn, sink = harness.connected(scopes=["operator.read"])
    for i in range(MAX_INFLIGHT_PER_SOCKET + 1):
        _req(conn, sink, "system.echo", {"text": "x"}, req_id=f"q{i}")
    assert len(sink.deferred) == MAX_INFLIGHT_PER_SOCKET
    err = sink.response(f"q{MAX_INFLIGHT_PER_SOCKET}")["error"]
    assert err["code"] == "UNAVAILABLE" and "in flight" in err["message"] and err["retryable"]
    awaitable, done = sink.deferred[0]
    awaitable.close()
    done({"ok": True, "text": "x"}, None)  # one finishes: room for one more
    _req(conn, sink, "system.echo", {"text": "x"}, req_id="again")
    assert len(sink.deferred) == MAX_INFLIGHT_PER_SOCKET + 1
    conn.close(1000, "")
    assert len(sink.cancelled) == len(sink.deferred)
    for awaitable, _ in sink.deferred[1:]:
        awaitable.close()


# -- plugins ----------------------------------------------------------------------------------
plugin_table = MethodTable()


@plugin_table.method("plugin.hello", SystemEchoParams, SystemEchoResult, "operator.read",
                     summary="a plugin's method")
def _plugin_hello(call, params):
    return SystemEchoResult(ok=True, text="hello " + params.text)


def _install_entry_point(tmp_path, monkeypatch, target: str) -> None:
    dist = tmp_path / "krabfast_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: krabfast-test-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[krabfast.methods]\nhello = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_plugin_methods_are_served_and_advertised(tmp_path, monkeypatch):
    _install_entry_point(tmp_path, monkeypatch, "tests.unit.test_seams:plugin_table")
    h = Harness()
    h.hub = Hub(h.config, clock_ms=h.clock.clock_ms, monotonic=h.clock.monotonic, plugins=True)
    conn, sink = h.open()
    conn.receive(connect_frame(scopes=["operator.read"]))
    hello = sink.response("c1")["payload"]
    assert "plugin.hello" in hello["features"]["methods"]
    assert h.hub.hello.encode("x", 4, "operator", [], False) == \
        msgspec.json.encode(h.hub.hello.build("x", 4, "operator", [], False))
    _req(conn, sink, "plugin.hello", {"text": "there"})
    assert sink.response("r1")["payload"] == {"ok": True, "text": "hello there"}


def test_a_broken_plugin_is_logged_and_skipped(tmp_path, monkeypatch, caplog):
    _install_entry_point(tmp_path, monkeypatch, "tests.unit.no_such_module:table")
    with caplog.at_level(logging.ERROR, "krabfast.gateway"):
        hub = Hub(GatewayConfig(state_dir=":memory:"), plugins=True)
    assert "hello" in caplog.text and "failed to load" in caplog.text
    assert sorted(hub.methods) == sorted(M.METHODS)


def test_without_plugins_the_served_set_is_the_declared_one():
    hub = Hub(GatewayConfig(state_dir=":memory:"))
    assert hub.features.methods == sorted(M.METHODS) and set(hub.methods) == set(M.METHODS)
    assert all(spec.handler is not None for spec in M.METHOD_SPECS)
    assert sys.modules["krabfast.methods"].METHODS is M.METHODS


# -- durable answers --------------------------------------------------------------------------
def test_a_durable_answer_waits_for_the_disk(tmp_path):
    import asyncio
    import dataclasses

    h = Harness(GatewayConfig(state_dir=str(tmp_path)))
    db = h.hub.database
    saved = []

    def rename(call, params):
        # Any durable change: a node record, through the store the hub opened.
        from krabfast.store.nodes import NodeRecord
        h.hub.nodes.store.save(NodeRecord("n1", display_name=params.text))
        saved.append(db.flush())
        return {"ok": True, "text": params.text}

    spec = dataclasses.replace(M.METHODS["system.echo"], name="test.durable", handler=rename,
                               durable=True)
    h.hub.add_methods([spec])
    conn, sink = h.connected(scopes=["operator.read"])
    _req(conn, sink, "test.durable", {"text": "x"}, req_id="d1")
    answered = [f for f in sink.frames() if f.get("id") == "d1"]
    if answered:  # the writer thread was faster than this test: nothing left to wait for
        assert saved[0].done()
    else:
        (barrier, done), = sink.deferred
        asyncio.run(barrier)
        assert saved[0].done()  # on disk before the answer
        done(None, None)
    assert sink.response("d1")["payload"] == {"ok": True, "text": "x"}


def test_an_in_memory_gateway_answers_durable_methods_at_once(harness):
    import dataclasses

    spec = dataclasses.replace(M.METHODS["system.echo"], name="test.durable", durable=True)
    harness.hub.add_methods([spec])
    conn, sink = harness.connected(scopes=["operator.read"])
    _req(conn, sink, "test.durable", {"text": "x"})
    assert sink.response("r1")["ok"] and not sink.deferred
