"""Handshake: challenge, connect, hello-ok, and every way the first frame can be wrong."""

from __future__ import annotations

import json

import pytest

from krabfast.gateway.config import GatewayConfig
from tests.unit.conftest import Harness, connect_frame, recorded


def test_challenge_is_first_and_unsequenced(harness):
    conn, sink = harness.open()
    (challenge,) = sink.frames()
    assert challenge["event"] == "connect.challenge"
    assert "seq" not in challenge
    assert challenge["payload"]["ts"] == harness.clock.ms
    assert len(challenge["payload"]["nonce"]) >= 16


def test_reference_cli_connect_frame_gets_hello_ok():
    h = Harness(GatewayConfig(auth_mode="token", token="T"))
    conn, sink = h.open()
    conn.receive(recorded("cli_connect_health.json"))
    res = sink.frames()[-1]
    assert res["ok"] is True
    hello = res["payload"]
    assert hello["type"] == "hello-ok" and hello["protocol"] == 4
    assert hello["auth"] == {"role": "operator", "scopes": ["operator.read"]}
    assert hello["policy"] == {"maxPayload": 26214400, "maxBufferedBytes": 52428800, "tickIntervalMs": 30000}
    assert hello["features"]["methods"] == sorted(h.hub.methods)
    assert set(hello["features"]["events"]) >= {"tick", "presence", "health", "shutdown"}
    assert hello["server"]["connId"] == conn.conn_id
    assert set(hello["snapshot"]) >= {"presence", "health", "stateVersion", "uptimeMs"}
    assert sink.closed is None


def _first_frame_fails(raw: bytes, *, expect_error: bool, close_code: int = 1008):
    h = Harness()
    conn, sink = h.open()
    conn.receive(raw)
    assert sink.closed is not None and sink.closed[0] == close_code, sink.closed
    errors = [f for f in sink.frames() if f["type"] == "res"]
    assert bool(errors) == expect_error, errors
    assert h.hub.bus.count() == 0 and h.hub.directory.connections == {} and not h.hub.directory.preauth_by_ip
    return errors[0]["error"] if errors else None


def test_non_json_first_frame_closes_1000():
    # As the reference: a plain close with no reason (JSON that is not a request is 1008).
    _first_frame_fails(b"hello there", expect_error=False, close_code=1000)


def test_event_frame_first_closes_1008():
    _first_frame_fails(b'{"type":"event","event":"tick"}', expect_error=False)


def test_other_method_first_gets_error_then_close():
    err = _first_frame_fails(b'{"type":"req","id":"1","method":"health"}', expect_error=True)
    assert err["code"] == "INVALID_REQUEST"


def test_invalid_connect_params_name_the_path():
    frame = json.loads(connect_frame())
    frame["params"]["client"]["mode"] = "banana"
    err = _first_frame_fails(json.dumps(frame).encode(), expect_error=True)
    assert err["code"] == "INVALID_REQUEST"
    assert "$.params.client.mode" in err["message"]


def test_missing_connect_params():
    err = _first_frame_fails(b'{"type":"req","id":"1","method":"connect"}', expect_error=True)
    assert err["code"] == "INVALID_REQUEST"


def test_malformed_request_with_id_gets_error():
    err = _first_frame_fails(b'{"type":"req","id":"9","method":""}', expect_error=True)
    assert "$.method" in err["message"]


@pytest.mark.parametrize("lo,hi", [(1, 2), (5, 6)])
def test_protocol_range_mismatch(lo, hi):
    err = _first_frame_fails(connect_frame(minProtocol=lo, maxProtocol=hi), expect_error=True,
                             close_code=1002)
    assert err["message"] == "protocol mismatch"
    assert err["details"] == {"code": "PROTOCOL_MISMATCH", "clientMinProtocol": lo,
                              "clientMaxProtocol": hi, "expectedProtocol": 4, "minimumProbeProtocol": 3}


def test_probe_may_use_protocol_3():
    h = Harness()
    conn, sink = h.open()
    conn.receive(connect_frame(minProtocol=3, maxProtocol=3, client_id="openclaw-probe", mode="probe"))
    assert sink.response("c1")["payload"]["protocol"] == 3
    _first_frame_fails(connect_frame(minProtocol=3, maxProtocol=3), expect_error=True, close_code=1002)


def test_invalid_role():
    err = _first_frame_fails(connect_frame(role="admin"), expect_error=True)
    assert err["message"] == "invalid role"


def test_protocol_negotiates_highest_common():
    h = Harness()
    conn, sink = h.open()
    conn.receive(connect_frame(minProtocol=3, maxProtocol=9))
    assert sink.response("c1")["payload"]["protocol"] == 4


def test_oversize_preauth_frame_closes_1009():
    big = connect_frame(locale="x" * 70_000)
    _first_frame_fails(big, expect_error=False, close_code=1009)


def test_invalid_utf8_closes_1007():
    _first_frame_fails(b'{"type":"req","id":"1","method":"conn\xff"}', expect_error=False, close_code=1007)


def test_binary_connect_is_read_as_text():
    h = Harness()
    conn, sink = h.open()
    conn.receive(connect_frame(), binary=True)
    assert sink.response("c1")["ok"] and sink.closed is None


def test_handshake_timeout_closes():
    h = Harness()
    conn, sink = h.open()
    conn.handshake_timed_out()
    assert sink.closed == (1000, "")  # the reference's plain close
    assert not h.hub.directory.preauth_by_ip


def test_timeout_after_connect_is_a_no_op(harness):
    conn, sink = harness.connected()
    conn.handshake_timed_out()
    assert sink.closed is None


def test_preauth_count_per_ip():
    h = Harness()
    a, _ = h.open(peer_ip="10.0.0.5", is_local=False)
    b, _ = h.open(peer_ip="10.0.0.5", is_local=False)
    assert h.hub.directory.preauth_by_ip["10.0.0.5"] == 2
    a.receive(connect_frame())
    assert h.hub.directory.preauth_by_ip["10.0.0.5"] == 1
    b.transport_closed()
    assert "10.0.0.5" not in h.hub.directory.preauth_by_ip


# -- shared-secret auth -----------------------------------------------------------------------

def _auth_fail(config, frame, **open_kw):
    h = Harness(config)
    conn, sink = h.open(**open_kw)
    conn.receive(frame)
    assert sink.closed and sink.closed[0] == 1008
    return sink.frames()[-1]["error"]


@pytest.mark.parametrize("auth", [None, {}, {"token": ""}])
@pytest.mark.parametrize("mode", ["token", "password"])
def test_no_credential_and_no_device_is_not_paired(auth, mode):
    # The reference asks for a device identity, not for the secret (its Control UI shows
    # the pairing screen on NOT_PAIRED).
    cfg = GatewayConfig(auth_mode=mode, token="T" if mode == "token" else None,
                        password="P" if mode == "password" else None)
    extra = {} if auth is None else {"auth": auth}
    h = Harness(cfg)
    conn, sink = h.open()
    conn.receive(connect_frame(**extra))
    err = sink.frames()[-1]["error"]
    assert err == {"code": "NOT_PAIRED", "message": "device identity required",
                   "details": {"code": "DEVICE_IDENTITY_REQUIRED"}}
    assert sink.closed == (1008, "device identity required")


def test_token_mismatch():
    err = _auth_fail(GatewayConfig(auth_mode="token", token="T"),
                     connect_frame(token="nope", client_id="cli", mode="cli"))
    assert err["details"]["code"] == "AUTH_TOKEN_MISMATCH"
    assert err["message"] == ("unauthorized: gateway token mismatch "
                              "(use this gateway's gateway.auth.token or pair the device)")


def test_password_mismatch():
    err = _auth_fail(GatewayConfig(auth_mode="password", password="pw"), connect_frame(password="x"))
    assert err["details"]["code"] == "AUTH_PASSWORD_MISMATCH"


def test_password_ok():
    h = Harness(GatewayConfig(auth_mode="password", password="pw"))
    h.connected(password="pw")


def test_rate_limit_locks_out_remote_after_ten_failures():
    h = Harness(GatewayConfig(auth_mode="token", token="T", bind="0.0.0.0"))
    codes = []
    for _ in range(11):
        conn, sink = h.open(peer_ip="203.0.113.9", is_local=False)
        conn.receive(connect_frame(token="wrong"))
        codes.append(sink.last()["error"]["details"]["code"])
    assert codes[:10] == ["AUTH_TOKEN_MISMATCH"] * 10
    assert codes[10:] == ["AUTH_RATE_LIMITED"]
    # Even the right token is refused while locked out, with a retry hint.
    conn, sink = h.open(peer_ip="203.0.113.9", is_local=False)
    conn.receive(connect_frame(token="T"))
    err = sink.last()["error"]
    assert err["details"]["code"] == "AUTH_RATE_LIMITED" and err["retryAfterMs"] > 0
    # Another address is unaffected; the lockout expires after 5 minutes.
    h.connected(peer_ip="203.0.113.10", is_local=False, token="T")
    h.clock.advance(300_001)
    h.connected(peer_ip="203.0.113.9", is_local=False, token="T")


def test_rate_limit_exempts_loopback():
    h = Harness(GatewayConfig(auth_mode="token", token="T"))
    for _ in range(15):
        conn, sink = h.open()
        conn.receive(connect_frame(token="wrong"))
        assert sink.last()["error"]["details"]["code"] == "AUTH_TOKEN_MISMATCH"
    h.connected(token="T")


# -- browser (Control UI / WebChat) clients ------------------------------------------------------

@pytest.mark.parametrize("browser,is_local,ok", [
    (None, True, False),                                            # no Origin header at all
    (("http://evil.example", "127.0.0.1:18789"), True, False),      # foreign page
    (("http://127.0.0.1:18789", "127.0.0.1:18789"), True, True),    # served by the gateway
    (("http://localhost:5173", "127.0.0.1:18789"), True, True),     # local dev page, local peer
    (("http://localhost:5173", "gw.example:18789"), False, False),  # loopback origin, remote peer
    # Same host: only a private/loopback address, *.local or *.ts.net (as the reference), so
    # a DNS-rebound name (evil.example resolving to 127.0.0.1) is not "the gateway's own".
    (("https://gw.example", "gw.example:443"), False, False),       # public name: allowedOrigins
    (("http://evil.example:18789", "evil.example:18789"), True, False),  # DNS rebinding
    (("http://192.168.1.5:18789", "192.168.1.5:18789"), False, True),    # LAN address
    (("http://gw.local:18789", "gw.local:18789"), False, True),          # mDNS name
    (("https://gw.example", "gw.example:443", ("https://gw.example",)), False, True),
    (("https://GW.example/", "gw.example:443", ("https://gw.example",)), False, True),
    (("https://other.example", "gw.example:443", ("https://gw.example",)), False, False),
    (("https://any.example", "gw.example:443", ("*",)), False, True),
    (("null", "gw.example:443", ("https://gw.example",)), False, False),
])
def test_control_ui_origin(browser, is_local, ok):
    from krabfast.connection import Connection
    from tests.unit.conftest import RecordingSink

    allowed = frozenset(browser[2]) if browser and len(browser) > 2 else frozenset()
    browser = browser[:2] if browser else None
    h = Harness(GatewayConfig(auth_mode="token", token="T", control_ui_allowed_origins=allowed))
    sink = RecordingSink()
    conn = Connection(h.hub, sink, peer_ip="127.0.0.1" if is_local else "198.51.100.3",
                      is_local=is_local, browser=browser)
    conn.start()
    conn.receive(connect_frame(client_id="openclaw-control-ui", mode="webchat", token="T"))
    res = sink.response("c1")
    assert res["ok"] is ok, res
    if not ok:
        missing = browser is None or browser[0] == "null"
        assert res["error"]["details"] == {
            "code": "CONTROL_UI_ORIGIN_NOT_ALLOWED",
            "reason": "origin missing or invalid" if missing else "origin not allowed"}
        assert sink.closed[0] == 1008


@pytest.mark.parametrize("browser,is_local,ok", [
    (("http://evil.example", "127.0.0.1:18789"), True, False),   # a web page, claiming `cli`
    (("http://127.0.0.1:18789", "127.0.0.1:18789"), True, True),  # the gateway's own page
    (None, True, True),                                           # no Origin: not a browser
])
def test_any_browser_socket_is_origin_checked(browser, is_local, ok):
    """A page must not open the loopback gateway as a local control tool (`cli`/`cli` keeps
    its operator scopes without a device): every socket that sent an Origin is checked."""
    from krabfast.connection import Connection
    from tests.unit.conftest import RecordingSink

    h = Harness(GatewayConfig())
    sink = RecordingSink()
    conn = Connection(h.hub, sink, peer_ip="127.0.0.1", is_local=is_local, browser=browser)
    conn.start()
    conn.receive(connect_frame(client_id="cli", mode="cli"))
    res = sink.response("c1")
    assert res["ok"] is ok, res
    if not ok:
        assert res["error"]["details"]["code"] == "CONTROL_UI_ORIGIN_NOT_ALLOWED"
        assert sink.closed[0] == 1008


def test_handshake_deadlines_are_swept_oldest_first():
    h = Harness(GatewayConfig(handshake_timeout_ms=1000))
    first, first_sink = h.open()
    h.clock.advance(600)
    second, second_sink = h.open()
    done, _ = h.open()
    done.receive(connect_frame())
    h.clock.advance(500)  # first is 1100 ms old, second 500 ms
    assert h.hub.expire_handshakes() == 1
    assert first_sink.closed == (1000, "") and second_sink.closed is None
    h.clock.advance(600)
    assert h.hub.expire_handshakes() == 1 and second_sink.closed is not None
    assert h.hub.directory.handshakes == {} and h.hub.expire_handshakes() == 0


@pytest.mark.parametrize("protocol,role,scopes,can_read", [
    (4, "operator", ["operator.read"], True), (4, "operator", [], False),
    (3, "node", [], False), (4, "operator", ["operator.admin", "operator.pairing"], True)])
def test_cached_hello_ok_bytes_equal_the_struct_encoding(protocol, role, scopes, can_read):
    import msgspec

    h = Harness(GatewayConfig(auth_mode="token", token="T"))
    h.connected(client_id="openclaw-macos", mode="ui", token="T")  # a presence row
    hello = h.hub.hello
    assert hello.encode("conn-1", protocol, role, scopes, can_read) == \
        msgspec.json.encode(hello.build("conn-1", protocol, role, scopes, can_read))
