"""After the handshake: method dispatch, validation, scopes, idempotency."""

from __future__ import annotations

import asyncio
import json

from krabfast.protocol.errors import GatewayError, ErrorCode
from krabfast import methods as M
from tests.unit.conftest import Harness


def test_unknown_method(harness):
    conn, sink = harness.connected()  # operator.admin
    res = harness.request(conn, sink, "no.such.method", {})
    assert res["error"] == {"code": "INVALID_REQUEST", "message": "unknown method: no.such.method"}
    assert sink.closed is None


def test_unknown_method_without_admin_is_forbidden(harness):
    # The reference classifies every method it does not know as admin-only.
    conn, sink = harness.connected(scopes=["operator.read"])
    err = harness.request(conn, sink, "no.such.method", {})["error"]
    assert err == {"code": "FORBIDDEN", "message": "missing scope: operator.admin",
                   "details": {"code": "MISSING_SCOPE", "missingScope": "operator.admin",
                               "requiredScopes": ["operator.admin"]}}
    assert sink.closed is None


def test_bad_params_name_the_json_path(harness):
    conn, sink = harness.connected()
    res = harness.request(conn, sink, "system-event", {"text": 42})
    assert res["error"]["code"] == "INVALID_REQUEST"
    assert "$.params.text" in res["error"]["message"]
    res = harness.request(conn, sink, "system-event", {"text": "x", "extra": 1}, req_id="r2")
    assert "extra" in res["error"]["message"]
    res = harness.request(conn, sink, "system-event", [1], req_id="r3")
    assert "$.params" in res["error"]["message"]


def test_bad_params_change_nothing(harness):
    conn, sink = harness.connected()
    before = (harness.hub.presence.version, len(harness.hub.system_events))
    harness.request(conn, sink, "system-event", {})
    assert (harness.hub.presence.version, len(harness.hub.system_events)) == before


def test_missing_scope_is_forbidden_with_details(harness):
    conn, sink = harness.connected(scopes=["operator.read"])
    res = harness.request(conn, sink, "system-event", {"text": "hi"})
    err = res["error"]
    assert err["code"] == "FORBIDDEN"
    assert err["details"] == {"code": "MISSING_SCOPE", "missingScope": "operator.admin",
                              "requiredScopes": ["operator.admin"]}
    assert list(harness.hub.system_events) == []


def test_scope_implications(harness):
    conn, sink = harness.connected(scopes=["operator.write"])
    assert harness.request(conn, sink, "health")["ok"]  # write satisfies read
    conn2, sink2 = harness.connected(scopes=["operator.admin"], instance_id="i2")
    assert harness.request(conn2, sink2, "health")["ok"]  # admin satisfies everything
    conn3, sink3 = harness.connected(scopes=["operator.pairing"], instance_id="i3")
    err = harness.request(conn3, sink3, "system-presence")["error"]
    assert err["details"]["missingScope"] == "operator.read"


def test_health_is_open_to_every_authenticated_connection(harness):
    conn, sink = harness.connected(scopes=[])
    assert harness.request(conn, sink, "health")["ok"]
    assert harness.request(conn, sink, "status", req_id="r2")["error"]["code"] == "FORBIDDEN"


def test_only_local_control_tools_keep_scopes_without_a_device(harness):
    for client_id, mode, is_local, kept in (("cli", "cli", True, True),
                                            ("gateway-client", "backend", True, True),
                                            ("gateway-client", "ui", True, False),
                                            ("openclaw-macos", "ui", True, False),
                                            ("test", "test", True, False),
                                            ("cli", "probe", True, False),
                                            ("cli", "cli", False, False)):
        conn, sink = harness.open(peer_ip="127.0.0.1" if is_local else "198.51.100.7", is_local=is_local)
        from tests.unit.conftest import connect_frame
        conn.receive(connect_frame(client_id=client_id, mode=mode, scopes=["operator.read"]))
        scopes = sink.response("c1")["payload"]["auth"]["scopes"]
        assert scopes == (["operator.read"] if kept else []), (client_id, mode, is_local)


def test_every_served_method_follows_the_reference_scope_table():
    # Reference `methods.<name>.scope` for the methods we share (protocol.schema.json).
    expected = {"health": "operator.read", "status": "operator.read",
                "system-presence": "operator.read", "system-event": "operator.admin"}
    for name, scope in expected.items():
        assert M.METHODS[name].scope == scope


def test_health_and_status(harness):
    conn, sink = harness.connected(scopes=["operator.read"])
    health = harness.request(conn, sink, "health")["payload"]
    assert health["ok"] is True and health["ts"] == harness.clock.ms
    status = harness.request(conn, sink, "status", None, req_id="r2")["payload"]
    assert status["runtimeVersion"] == harness.hub.server_version
    assert status["gateway"]["connections"] == 1
    # What the reference CLI's `status` reads: sessions per agent, and the CLI projection
    # when asked for it (and only then, as the reference).
    assert status["sessions"]["byAgent"] == [{"agentId": "main", "path": "", "count": 0,
                                              "recent": []}]
    assert "cliProjection" not in status
    status = harness.request(conn, sink, "status", {"includeChannelSummary": False,
                                                    "includeCliProjection": True},
                             req_id="r3")["payload"]
    assert status["cliProjection"]["agents"] == {"defaultId": "main", "ownership": "sole",
                                                 "selectionRequired": False,
                                                 "rows": [{"id": "main"}]}
    assert status["heartbeat"] == {"defaultAgentId": "main", "agents": []}


def test_system_event_appends_presence_and_broadcasts(harness):
    a, sink_a = harness.connected(instance_id="a")
    b, sink_b = harness.connected(instance_id="b", scopes=["operator.read"])
    v0 = harness.hub.presence.version
    harness.clock.advance(5)
    res = harness.request(a, sink_a, "system-event", {"text": "deploy done"})
    assert res["payload"] == {"ok": True}
    for sink in (sink_a, sink_b):
        ev = sink.events("presence")[-1]
        assert ev["stateVersion"]["presence"] == v0 + 1
        texts = [(e.get("text"), e["ts"]) for e in ev["payload"]["presence"]]
        assert ("deploy done", harness.clock.ms) in texts
    listed = harness.request(b, sink_b, "system-presence", None, req_id="r2")["payload"]
    assert listed[0]["reason"] == "self"
    assert any(e.get("text") == "deploy done" for e in listed)
    assert harness.request(b, sink_b, "status", None, req_id="r3")["payload"]["queuedSystemEvents"] == ["deploy done"]


def test_echo(harness):
    conn, sink = harness.connected(scopes=["operator.read"])
    assert harness.request(conn, sink, "system.echo", {"text": "ping"})["payload"] == {"ok": True, "text": "ping"}


def test_idempotent_retry_returns_first_response_without_repeating(harness):
    conn, sink = harness.connected()
    first = harness.request(conn, sink, "system-event", {"text": "once", "idempotencyKey": "k1"})
    version = harness.hub.presence.version
    again = harness.request(conn, sink, "system-event", {"text": "once", "idempotencyKey": "k1"}, req_id="r2")
    assert again["payload"] == first["payload"] and again["id"] == "r2"
    assert harness.hub.presence.version == version
    assert list(harness.hub.system_events) == ["once"]
    # A different key runs again; the first key expires after the TTL.
    harness.request(conn, sink, "system-event", {"text": "once", "idempotencyKey": "k2"}, req_id="r3")
    harness.clock.advance(300_001)
    harness.request(conn, sink, "system-event", {"text": "once", "idempotencyKey": "k1"}, req_id="r4")
    assert len(harness.hub.system_events) == 3


def test_idempotent_retry_is_per_caller(harness):
    # The same client instance reconnecting is the same caller; another instance that
    # happens to reuse the key is a new call.
    a, sink_a = harness.connected(instance_id="a")
    a2, sink_a2 = harness.connected(instance_id="a")
    b, sink_b = harness.connected(instance_id="b")
    harness.request(a, sink_a, "system-event", {"text": "x", "idempotencyKey": "shared"})
    harness.request(a2, sink_a2, "system-event", {"text": "x", "idempotencyKey": "shared"})
    assert len(harness.hub.system_events) == 1
    harness.request(b, sink_b, "system-event", {"text": "x", "idempotencyKey": "shared"})
    assert len(harness.hub.system_events) == 2


def test_idempotent_key_with_other_params_is_a_new_call(harness):
    conn, sink = harness.connected()
    harness.request(conn, sink, "system-event", {"text": "one", "idempotencyKey": "k"})
    res = harness.request(conn, sink, "system-event", {"text": "two", "idempotencyKey": "k"},
                          req_id="r2")
    assert res["ok"] and list(harness.hub.system_events) == ["one", "two"]


def test_replay_passes_authorization_first(harness):
    # An admin's outcome is never replayed to a caller without the scope, and a refused
    # caller's error is not remembered against the admin's later call.
    low, low_sink = harness.connected(scopes=["operator.read"], instance_id="i1")
    err = harness.request(low, low_sink, "system-event", {"text": "x", "idempotencyKey": "K"})
    assert err["error"]["code"] == "FORBIDDEN"
    admin, admin_sink = harness.connected(scopes=["operator.admin"], instance_id="i1")
    assert harness.request(admin, admin_sink, "system-event",
                           {"text": "x", "idempotencyKey": "K"})["ok"]
    err = harness.request(low, low_sink, "system-event", {"text": "x", "idempotencyKey": "K"},
                          req_id="r2")
    assert err["error"]["code"] == "FORBIDDEN"
    none, none_sink = harness.connected(scopes=[], instance_id="i1")
    err = harness.request(none, none_sink, "system-event", {"text": "x", "idempotencyKey": "K"})
    assert err["error"]["code"] == "FORBIDDEN"


def test_error_outcomes_are_not_cached(harness):
    calls = []

    def flaky(call, params):
        calls.append(1)
        if len(calls) == 1:
            raise GatewayError(ErrorCode.UNAVAILABLE, "try again", retryable=True)
        return {"ok": True}

    harness.hub.set_method(M.METHODS["system-event"], flaky)
    conn, sink = harness.connected()
    assert harness.request(conn, sink, "system-event", {"text": "a", "idempotencyKey": "k"})[
        "error"]["code"] == "UNAVAILABLE"
    assert harness.request(conn, sink, "system-event", {"text": "a", "idempotencyKey": "k"},
                           req_id="r2")["ok"]
    assert harness.request(conn, sink, "system-event", {"text": "a", "idempotencyKey": "k"},
                           req_id="r3")["ok"]
    assert len(calls) == 2  # the error ran again, the success was replayed


def test_in_flight_entries_are_never_evicted(harness):
    harness.hub.idempotency.max_entries = 2

    async def slow(call, params):
        return {"ok": True, "text": params.text}

    harness.hub.set_method(M.METHODS["system-event"], slow)
    conn, sink = harness.connected()
    for rid, key in (("r1", "k1"), ("r2", "k1"), ("r3", "k2"), ("r4", "k3"), ("r5", "k4")):
        sink.methods[rid] = "system-event"
        conn.receive(json.dumps({"type": "req", "id": rid, "method": "system-event",
                                 "params": {"text": key, "idempotencyKey": key}}).encode())
    assert len(sink.deferred) == 4  # r2 waits on r1
    for awaitable, done in sink.deferred:
        done(asyncio.run(awaitable), None)
    assert sink.response("r2")["payload"] == {"ok": True, "text": "k1"}
    assert len(harness.hub.idempotency) == 2 and harness.hub.idempotency.in_flight == 0


def test_unexpected_handler_exception_is_a_clean_answer(harness, caplog):
    def broken(call, params):
        raise RuntimeError("boom")

    harness.hub.set_method(M.METHODS["system.echo"], broken)
    conn, sink = harness.connected()
    for i in range(20):
        err = harness.request(conn, sink, "system.echo", {"text": "x"}, req_id=f"e{i}")["error"]
        assert err == {"code": "UNAVAILABLE", "message": "internal error"}
    assert sink.closed is None
    lines = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(lines) <= 1 and all(r.exc_info is None for r in lines)


def test_async_handler_with_inflight_retry(harness):
    calls = []

    async def slow(call, params):
        calls.append(params.text)
        return {"ok": True, "n": len(calls)}

    harness.hub.set_method(M.METHODS["system-event"], slow)
    conn, sink = harness.connected()
    for rid in ("r1", "r2"):
        sink.methods[rid] = "system-event"
        conn.receive(json.dumps({"type": "req", "id": rid, "method": "system-event",
                                 "params": {"text": "a", "idempotencyKey": "k"}}).encode())
    assert len(sink.deferred) == 1 and not [f for f in sink.frames() if f["type"] == "res" and f["id"] != "c1"]
    awaitable, done = sink.deferred[0]
    done(asyncio.run(awaitable), None)
    assert sink.response("r1")["payload"] == sink.response("r2")["payload"] == {"ok": True, "n": 1}


def test_handler_errors_become_error_responses(harness):
    def broken(call, params):
        raise GatewayError(ErrorCode.UNAVAILABLE, "backend down", retryable=True)

    harness.hub.set_method(M.METHODS["system.echo"], broken)
    conn, sink = harness.connected()
    err = harness.request(conn, sink, "system.echo", {"text": "x"})["error"]
    assert err == {"code": "UNAVAILABLE", "message": "backend down", "retryable": True}


def test_second_connect_is_rejected_but_connection_stays(harness):
    conn, sink = harness.connected()
    res = harness.request(conn, sink, "connect", {})
    assert res["error"] == {"code": "INVALID_REQUEST",
                            "message": "connect is only valid as the first request"}
    assert sink.closed is None
    # `connect` is classified admin: a read-only socket is told it lacks the scope.
    ro, ro_sink = harness.connected(scopes=["operator.read"], instance_id="ro")
    err = harness.request(ro, ro_sink, "connect", {})["error"]
    assert err["code"] == "FORBIDDEN" and err["details"]["missingScope"] == "operator.admin"
    assert ro_sink.closed is None


def test_malformed_frames_after_handshake(harness):
    conn, sink = harness.connected()
    conn.receive(b'{"type":"req","id":"x1","method":"health","bogus":1}')
    assert sink.response("x1")["error"]["code"] == "INVALID_REQUEST"
    conn.receive(b'{"type":"req","method":"health"}')
    assert sink.response("invalid")["error"]["code"] == "INVALID_REQUEST"
    conn.receive(b'[1, 2]')
    conn.receive(b'{"type":"event","event":"tick"}')
    assert len([f for f in sink.frames() if f.get("id") == "invalid"]) == 3
    n = len(sink.sent)
    conn.receive(b"not json")  # nothing to correlate: dropped
    assert len(sink.sent) == n and sink.closed is None
    conn.receive(b'{"type":"req","id":"b1","method":"health"}', binary=True)
    assert sink.response("b1")["ok"]
    conn.receive(b'{"type":"req","id":"x2","method":"h\xffalth"}')
    assert sink.closed[0] == 1007


def test_wrong_role_calls_are_refused_then_closed(harness):
    from krabfast.protocol.methods import MethodSpec
    spec = MethodSpec("node.only", None, None, "node")
    harness.hub.set_method(spec, lambda call, params: {"ok": True})
    conn, sink = harness.connected()
    for i in range(10):
        err = harness.request(conn, sink, "node.only", {}, req_id=f"n{i}")["error"]
        assert err == {"code": "INVALID_REQUEST", "message": "unauthorized role: operator"}
    assert sink.closed is None
    harness.request(conn, sink, "health", None, req_id="ok")  # any success resets the count
    for i in range(11):
        harness.request(conn, sink, "node.only", {}, req_id=f"m{i}")
    assert sink.closed == (1008, "repeated unauthorized calls")


def test_node_role_without_device_is_refused():
    h = Harness()
    conn, sink = h.open()
    from tests.unit.conftest import connect_frame
    conn.receive(connect_frame(role="node", scopes=[], client_id="node-host", mode="node"))
    assert sink.closed[0] == 1008
    assert sink.frames()[-1]["error"]["details"]["code"] == "DEVICE_IDENTITY_REQUIRED"


def test_deep_nesting_and_lone_surrogates_get_answers(harness):
    conn, sink = harness.connected()
    conn.receive(b'{"type":"req","id":"d1","method":"health","params":' + b"[" * 3000 +
                 b"]" * 3000 + b"}")
    assert "nested too deeply" in sink.response("d1")["error"]["message"]
    conn.receive(b'{"type":"req","id":"s1","method":"system.echo","params":{"text":"\\ud800"}}')
    assert "surrogate" in sink.response("s1")["error"]["message"]
    assert sink.closed is None
    pre, pre_sink = harness.open()
    pre.receive(b'{"type":"req","id":"c9","method":"connect","params":' + b"[" * 3000 +
                b"]" * 3000 + b"}")
    assert pre_sink.closed[0] == 1008 and pre_sink.response("c9")["error"]["code"] == "INVALID_REQUEST"
