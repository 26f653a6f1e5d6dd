"""Server-pushed events: seq per socket, tick, presence, health, shutdown, fan-out rules."""

from __future__ import annotations

from krabfast._core import fanout as F
from krabfast.protocol.handshake import EventLoopHealth


def _seqs(sink):
    return [f["seq"] for f in sink.events() if "seq" in f]


def test_tick_reaches_authenticated_sockets_only(harness):
    pending, pending_sink = harness.open()
    a, sink_a = harness.connected(instance_id="a")
    harness.clock.advance(1000)
    assert harness.hub.tick() == 1
    assert sink_a.events("tick")[-1]["payload"] == {"ts": harness.clock.ms}
    assert pending_sink.events("tick") == []


def test_seq_is_per_socket_and_gapless(harness):
    a, sink_a = harness.connected(instance_id="a", scopes=["operator.read"])
    harness.connected(instance_id="ui", mode="ui", client_id="openclaw-macos")  # presence: a=1
    b, sink_b = harness.connected(instance_id="b", scopes=["operator.read"])
    harness.connected(instance_id="ui2", mode="ui", client_id="openclaw-macos")  # a=2, b=1
    for _ in range(3):
        harness.hub.tick()
    assert _seqs(sink_a) == [1, 2, 3, 4, 5]
    assert _seqs(sink_b) == [1, 2, 3, 4]


def test_presence_on_connect_and_disconnect(harness):
    watcher, sink = harness.connected(instance_id="w")
    other, _ = harness.connected(instance_id="o", client_id="openclaw-macos", mode="ui")
    ev = sink.events("presence")[-1]
    assert any(e.get("instanceId") == "o" and e["reason"] == "connect" for e in ev["payload"]["presence"])
    v = ev["stateVersion"]["presence"]
    harness.clock.advance(10)
    other.transport_closed()
    ev2 = sink.events("presence")[-1]
    assert ev2["stateVersion"]["presence"] == v + 1
    (row,) = [e for e in ev2["payload"]["presence"] if e.get("instanceId") == "o"]
    assert row["reason"] == "disconnect" and row["ts"] == harness.clock.ms
    assert row["host"] == "openclaw-macos" and "ip" not in row  # loopback peers carry no ip
    # Rows expire five minutes after their last update.
    harness.clock.advance(300_001)
    harness.hub.maintain()
    ev3 = sink.events("presence")[-1]
    assert [e["reason"] for e in ev3["payload"]["presence"]] == ["self"]


def test_presence_needs_read_scope(harness):
    blind, blind_sink = harness.connected(instance_id="b", scopes=[])
    reader, reader_sink = harness.connected(instance_id="r", scopes=["operator.read"])
    harness.connected(instance_id="ui", mode="ui", client_id="openclaw-macos")
    assert reader_sink.events("presence") and not blind_sink.events("presence")
    hello = blind_sink.response("c1")["payload"]
    assert hello["snapshot"]["presence"] == []


def test_ephemeral_clients_do_not_enter_presence(harness):
    watcher, sink = harness.connected(instance_id="w")
    n = len(sink.events("presence"))
    for mode, client_id in (("cli", "cli"), ("backend", "gateway-client"), ("probe", "openclaw-probe")):
        c, _ = harness.connected(client_id=client_id, mode=mode, instance_id=mode)
        c.transport_closed()
    assert len(sink.events("presence")) == n


def test_health_event_only_when_meaning_changes(harness):
    conn, sink = harness.connected()
    calm = EventLoopHealth(degraded=False, reasons=[], interval_ms=500, delay_p99_ms=1,
                           delay_max_ms=2, utilization=0.1, cpu_core_ratio=0.1)
    harness.hub.refresh_health(calm)
    n = len(sink.events("health"))
    harness.clock.advance(60_000)
    calm2 = EventLoopHealth(degraded=False, reasons=[], interval_ms=500, delay_p99_ms=3,
                            delay_max_ms=4, utilization=0.2, cpu_core_ratio=0.2)
    assert harness.hub.refresh_health(calm2) is False
    busy = EventLoopHealth(degraded=True, reasons=["event_loop_delay"], interval_ms=500,
                           delay_p99_ms=900, delay_max_ms=1000, utilization=1, cpu_core_ratio=1)
    assert harness.hub.refresh_health(busy) is True
    events = sink.events("health")
    assert len(events) == n + 1
    assert events[-1]["payload"]["eventLoop"]["degraded"] is True
    assert events[-1]["stateVersion"]["health"] == harness.hub.health_version


def test_shutdown_event_reaches_everyone(harness):
    a, sink_a = harness.connected(instance_id="a", scopes=[])
    b, sink_b = harness.connected(instance_id="b", scopes=["operator.read"])
    assert harness.hub.shutdown("gateway stopping (SIGTERM)") == 2
    assert sink_a.events("shutdown")[-1]["payload"] == {"reason": "gateway stopping (SIGTERM)"}
    assert sink_b.events("shutdown")


class _Sock:
    """A sink and its owner in one."""

    def __init__(self, queued=0):
        self.out = []
        self.queued = queued
        self.overflowed = 0

    def sub(self, mask=0):
        return F.Subscriber(self, self, mask)

    def send(self, data):
        self.out.append(data)

    def buffered(self):
        return self.queued

    def slow_consumer(self):
        self.overflowed += 1


def test_fanout_scope_filter_and_slow_sockets():
    read, admin, none = _Sock(), _Sock(), _Sock()
    slow = _Sock(queued=10_000)
    subs = [read.sub(1), admin.sub(0xFF), none.sub(0), slow.sub(1)]
    # Scope-filtered, droppable: the slow one is skipped and its seq does not move.
    assert F.fanout(b'{"type":"event","event":"x","seq":', b"}", subs, 1, True, 1000, 5000) == 2
    assert read.out == [b'{"type":"event","event":"x","seq":1}'] and none.out == []
    assert subs[3].seq == 0 and slow.overflowed == 0
    # Not droppable and over the hard limit: overflow (the adapter closes it with 1008).
    assert F.fanout(b'{"seq":', b"}", subs, 0, False, 1000, 5000) == 3
    assert slow.overflowed == 1 and subs[3].seq == 0
    assert none.out == [b'{"seq":1}'] and read.out[-1] == b'{"seq":2}'


def test_slow_consumer_is_closed_on_non_droppable_event(harness):
    conn, sink = harness.connected(instance_id="a")
    sink.queued = harness.config.max_buffered_bytes + 1
    harness.hub.shutdown("bye")
    assert sink.closed == (1008, "slow consumer")
    assert not harness.hub.bus.attached(conn.conn_id)


def test_system_event_text_and_fields_are_bounded(harness):
    from krabfast.protocol.system import SYSTEM_EVENT_FIELD_MAX, SYSTEM_EVENT_TEXT_MAX

    conn, sink = harness.connected()
    before = harness.hub.presence.version
    res = harness.request(conn, sink, "system-event", {"text": "x" * (SYSTEM_EVENT_TEXT_MAX + 1)})
    assert res["error"]["code"] == "INVALID_REQUEST" and "$.params.text" in res["error"]["message"]
    res = harness.request(conn, sink, "system-event",
                          {"text": "ok", "host": "h" * (SYSTEM_EVENT_FIELD_MAX + 1)}, req_id="r2")
    assert "$.params.host" in res["error"]["message"]
    assert harness.hub.presence.version == before and not harness.hub.system_events


def test_presence_and_hello_ok_stay_small_whatever_clients_put_in(harness):
    from krabfast.gateway.presence import PRESENCE_BYTES_MAX, ROW_TEXT_MAX
    from krabfast.protocol.system import SYSTEM_EVENT_TEXT_MAX

    conn, sink = harness.connected()
    for i in range(40):  # about 9.5 KB a row once clamped: past the byte budget
        res = harness.request(conn, sink, "system-event", {
            "text": f"{i} " + "y" * (SYSTEM_EVENT_TEXT_MAX - 8), "deviceId": f"dev-{i}",
            "host": "h" * 512, "tags": ["t" * 512] * 64}, req_id=f"e{i}")
        assert res["ok"], res
    rows = harness.request(conn, sink, "system-presence", req_id="p")["payload"]
    assert all(len(r.get("text", "")) <= ROW_TEXT_MAX for r in rows)
    assert harness.hub.presence.encoded_bytes <= PRESENCE_BYTES_MAX
    assert len(harness.hub.system_events) == 20  # the reference keeps 20 queued events
    other, other_sink = harness.connected(instance_id="late")
    hello = other_sink.sent[-1] if b'"hello-ok"' in other_sink.sent[-1] else next(
        f for f in other_sink.sent if b'"hello-ok"' in f)
    assert len(hello) < PRESENCE_BYTES_MAX + 16 * 1024, len(hello)
    # The newest event is still listed (oldest rows go first).
    assert any(r.get("deviceId") == "dev-39" for r in rows)


def test_presence_for_a_socket_behind_is_coalesced_and_responses_do_not_wait(harness):
    """A socket over --drop-if-slow-bytes gets no presence frames while behind; once it
    drains it gets exactly one, the newest, with the next seq (no gap)."""
    watcher, wsink = harness.connected(scopes=["operator.read"], instance_id="w")
    admin, asink = harness.connected(instance_id="a")
    seq_before = watcher.sub.seq
    n_before = len(wsink.sent)
    wsink.queued = harness.config.drop_if_slow_bytes + 1
    for i in range(5):
        assert harness.request(admin, asink, "system-event", {"text": f"ev {i}"}, req_id=f"e{i}")["ok"]
    assert len(wsink.sent) == n_before  # nothing queued behind
    # A response is not held back.
    assert harness.request(watcher, wsink, "status", req_id="s1")["ok"]
    assert harness.hub.flush_held() == 0  # still behind: stays parked
    wsink.queued = 0
    assert harness.hub.flush_held() == 1
    presence = wsink.events("presence")
    assert len(presence) == 1 and presence[0]["seq"] == seq_before + 1
    assert [r.get("text") for r in presence[0]["payload"]["presence"]].count("ev 4") == 1
    assert presence[0]["stateVersion"]["presence"] == harness.hub.presence.version
    assert harness.hub.flush_held() == 0 and not harness.hub.bus.holding
    # A socket that closes while holding is forgotten.
    wsink.queued = harness.config.drop_if_slow_bytes + 1
    harness.request(admin, asink, "system-event", {"text": "late"}, req_id="e9")
    assert watcher in harness.hub.bus.holding
    watcher.transport_closed()
    assert not harness.hub.bus.holding
