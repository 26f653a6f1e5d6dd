"""Device identity, pairing and device tokens through the state machine, with real keys."""

from __future__ import annotations

import json

import pytest

from krabfast.gateway.config import GatewayConfig
from tests.devicekeys import DeviceKey
from tests.unit.conftest import Harness


def _harness(**kw) -> Harness:
    return Harness(GatewayConfig(auth_mode="token", token="T", state_dir=":memory:", **kw))


def _params(*, scopes=("operator.read",), role="operator", client_id="cli", mode="cli", auth=None):
    return {"minProtocol": 4, "maxProtocol": 4,
            "client": {"id": client_id, "version": "1.0.0", "platform": "linux", "mode": mode,
                       "deviceFamily": "Linux"},
            "role": role, "scopes": list(scopes), "auth": auth if auth is not None else {"token": "T"}}


def _connect(h: Harness, key: DeviceKey, *, peer_ip="127.0.0.1", is_local=True, mutate=None,
             token_for_signature=None, version=3, **kw):
    conn, sink = h.open(peer_ip=peer_ip, is_local=is_local)
    challenge = sink.frames()[0]["payload"]
    params = _params(**kw)
    signed = token_for_signature
    if signed is None:
        auth = params["auth"]
        signed = auth.get("token") or auth.get("deviceToken") or ""
    key.sign_into(params, challenge, signed, version)
    if mutate:
        mutate(params, challenge)
    conn.receive(json.dumps({"type": "req", "id": "c1", "method": "connect", "params": params}).encode())
    return conn, sink, sink.response("c1")


def _admin(h: Harness):
    return h.connected(client_id="gateway-client", mode="backend", token="T", instance_id="adm",
                       scopes=["operator.admin", "operator.read"])


def test_local_device_pairs_silently_and_gets_a_token():
    h = _harness()
    admin, admin_sink = _admin(h)
    key = DeviceKey()
    conn, sink, res = _connect(h, key)
    auth = res["payload"]["auth"]
    assert auth["role"] == "operator" and auth["scopes"] == ["operator.read"]
    assert len(auth["deviceToken"]) == 43 and auth["issuedAtMs"] == h.clock.ms
    resolved = admin_sink.events("device.pair.resolved")[-1]["payload"]
    assert resolved["deviceId"] == key.id and resolved["decision"] == "approved"
    assert not admin_sink.events("device.pair.requested")  # silent: no request event
    # The token alone reconnects, without the shared secret, and is echoed back.
    token = auth["deviceToken"]
    _, _, again = _connect(h, key, auth={"deviceToken": token})
    assert again["payload"]["auth"]["deviceToken"] == token
    # GatewayClient's form: the token in both fields.
    _, _, both = _connect(h, key, auth={"token": token, "deviceToken": token})
    assert both["ok"]


def test_v2_signature_is_accepted():
    h = _harness()
    _, _, res = _connect(h, DeviceKey(), version=2)
    assert res["ok"], res


@pytest.mark.parametrize("mutate,code,reason", [
    (lambda p, c: p["device"].update(id="0" * 64), "DEVICE_AUTH_DEVICE_ID_MISMATCH", "device-id-mismatch"),
    (lambda p, c: p["device"].update(signedAt=c["ts"] - 121_000), "DEVICE_AUTH_SIGNATURE_EXPIRED",
     "device-signature-stale"),
    (lambda p, c: p["device"].update(nonce="  "), "DEVICE_AUTH_NONCE_REQUIRED", "device-nonce-missing"),
    (lambda p, c: p["device"].update(nonce="not-the-challenge"), "DEVICE_AUTH_NONCE_MISMATCH",
     "device-nonce-mismatch"),
    (lambda p, c: p.update(scopes=["operator.admin"]), "DEVICE_AUTH_SIGNATURE_INVALID", "device-signature"),
    (lambda p, c: p["device"].update(publicKey="AAAA", id=__import__("hashlib").sha256(b"\0\0\0").hexdigest()),
     "DEVICE_AUTH_PUBLIC_KEY_INVALID", "device-public-key"),
])
def test_device_proof_failures(mutate, code, reason):
    h = _harness()
    _, sink, res = _connect(h, DeviceKey(), mutate=mutate)
    assert res["ok"] is False
    assert res["error"]["details"] == {"code": code, "reason": reason}
    assert sink.closed[0] == 1008


def test_signature_over_another_token_is_invalid():
    h = _harness()
    _, _, res = _connect(h, DeviceKey(), token_for_signature="other")
    assert res["error"]["details"]["code"] == "DEVICE_AUTH_SIGNATURE_INVALID"


def test_wrong_device_token_and_broader_scopes():
    h = _harness()
    key = DeviceKey()
    _, _, res = _connect(h, key)
    token = res["payload"]["auth"]["deviceToken"]
    _, sink, bad = _connect(h, key, auth={"deviceToken": "x" * 43})
    assert bad["error"]["details"]["code"] == "AUTH_DEVICE_TOKEN_MISMATCH" and sink.closed[0] == 1008
    _, _, wider = _connect(h, key, auth={"deviceToken": token}, scopes=["operator.admin"])
    assert wider["error"]["details"]["code"] == "AUTH_SCOPE_MISMATCH"
    # Another device cannot use it.
    _, _, other = _connect(h, DeviceKey(), auth={"deviceToken": token})
    assert other["error"]["details"]["code"] == "AUTH_DEVICE_TOKEN_MISMATCH"


def test_device_token_without_device_needs_identity():
    h = _harness()
    conn, sink = h.open()
    params = _params(auth={"deviceToken": "abc"})
    conn.receive(json.dumps({"type": "req", "id": "c1", "method": "connect", "params": params}).encode())
    err = sink.response("c1")["error"]
    assert err["code"] == "NOT_PAIRED" and err["details"]["code"] == "DEVICE_IDENTITY_REQUIRED"


def test_remote_device_waits_for_approval_then_connects():
    h = _harness()
    admin, admin_sink = _admin(h)
    key = DeviceKey()
    _, sink, res = _connect(h, key, peer_ip="203.0.113.5", is_local=False)
    err = res["error"]
    assert err["code"] == "NOT_PAIRED" and sink.closed[0] == 1008
    details = err["details"]
    assert details["code"] == "PAIRING_REQUIRED" and details["reason"] == "not-paired"
    assert details["deviceId"] == key.id and details["requestedScopes"] == ["operator.read"]
    requested = admin_sink.events("device.pair.requested")[-1]["payload"]
    assert requested["requestId"] == details["requestId"] and requested["remoteIp"] == "203.0.113.5"
    listed = h.request(admin, admin_sink, "device.pair.list", {}, req_id="l1")["payload"]
    assert [p["requestId"] for p in listed["pending"]] == [details["requestId"]] and listed["paired"] == []
    # A retry reuses the same request.
    _, _, retry = _connect(h, key, peer_ip="203.0.113.5", is_local=False)
    assert retry["error"]["details"]["requestId"] == details["requestId"]
    approved = h.request(admin, admin_sink, "device.pair.approve",
                         {"requestId": details["requestId"]}, req_id="a1")["payload"]
    assert approved["device"]["deviceId"] == key.id and approved["device"]["approvedVia"] == "owner"
    assert admin_sink.events("device.pair.resolved")[-1]["payload"]["decision"] == "approved"
    _, _, ok = _connect(h, key, peer_ip="203.0.113.5", is_local=False)
    assert ok["ok"] and ok["payload"]["auth"]["deviceToken"]
    # Asking for more later is a scope upgrade.
    _, _, more = _connect(h, key, peer_ip="203.0.113.5", is_local=False, scopes=["operator.admin"])
    assert more["error"]["details"]["reason"] == "scope-upgrade"
    assert more["error"]["details"]["approvedScopes"] == ["operator.read"]


def test_auto_approve_local_can_be_turned_off():
    h = _harness(auto_approve_local=False)
    _, _, res = _connect(h, DeviceKey())
    assert res["error"]["details"]["reason"] == "not-paired"


def test_reject_remove_rename_and_errors():
    h = _harness()
    admin, admin_sink = _admin(h)
    key = DeviceKey()
    _, _, res = _connect(h, key, peer_ip="203.0.113.5", is_local=False)
    request_id = res["error"]["details"]["requestId"]
    rej = h.request(admin, admin_sink, "device.pair.reject", {"requestId": request_id}, req_id="r1")
    assert rej["payload"] == {"requestId": request_id, "deviceId": key.id}
    again = h.request(admin, admin_sink, "device.pair.reject", {"requestId": request_id}, req_id="r2")
    assert again["error"] == {"code": "INVALID_REQUEST", "message": "unknown requestId"}
    _connect(h, key)  # pairs locally
    ren = h.request(admin, admin_sink, "device.pair.rename", {"deviceId": key.id, "label": "  Kitchen "},
                    req_id="n1")
    assert ren["payload"] == {"deviceId": key.id, "label": "Kitchen"}
    assert admin_sink.events("device.pair.changed")
    gone = h.request(admin, admin_sink, "device.pair.remove", {"deviceId": "nope"}, req_id="m0")
    assert gone["error"]["message"] == "unknown deviceId"
    assert h.request(admin, admin_sink, "device.pair.remove", {"deviceId": key.id},
                     req_id="m1")["payload"] == {"deviceId": key.id}


def test_revoke_and_rotate_close_the_device_sockets():
    h = _harness()
    admin, admin_sink = _admin(h)
    key = DeviceKey()
    conn, sink, res = _connect(h, key)
    token = res["payload"]["auth"]["deviceToken"]
    out = h.request(admin, admin_sink, "device.token.rotate",
                    {"deviceId": key.id, "role": "operator"}, req_id="t1")["payload"]
    assert out["tokenDelivery"] == "withheld-cross-device" and "token" not in out
    assert sink.closed == (4001, "device removed")
    _, _, old = _connect(h, key, auth={"deviceToken": token})
    assert old["error"]["details"]["code"] == "AUTH_DEVICE_TOKEN_MISMATCH"
    conn2, sink2, res2 = _connect(h, key)  # shared secret: a fresh token
    assert res2["ok"]
    rev = h.request(admin, admin_sink, "device.token.revoke", {"deviceId": key.id, "role": "operator"},
                    req_id="t2")["payload"]
    assert rev["deviceId"] == key.id and rev["revokedAtMs"] == h.clock.ms
    assert sink2.closed == (4001, "device removed")


def test_device_token_caller_rotates_its_own_token_in_band():
    h = _harness()
    key = DeviceKey()
    _, _, res = _connect(h, key, scopes=["operator.pairing", "operator.read"])
    token = res["payload"]["auth"]["deviceToken"]
    conn, sink, again = _connect(h, key, auth={"deviceToken": token},
                                 scopes=["operator.pairing", "operator.read"])
    assert again["ok"]
    sink.methods["t1"] = "device.token.rotate"
    conn.receive(json.dumps({"type": "req", "id": "t1", "method": "device.token.rotate",
                             "params": {"deviceId": key.id, "role": "operator"}}).encode())
    out = sink.response("t1")["payload"]
    assert out["tokenDelivery"] == "in-band" and out["token"] != token
    assert sink.closed == (4001, "device removed")  # after the reply
    other = DeviceKey()
    _connect(h, other)
    conn3, sink3, _ = _connect(h, key, auth={"deviceToken": out["token"]},
                               scopes=["operator.pairing", "operator.read"])
    denied = h.request(conn3, sink3, "device.token.revoke", {"deviceId": other.id, "role": "operator"},
                       req_id="x1")
    assert denied["error"]["message"] == "device token revocation denied"


def test_pairing_methods_need_the_pairing_scope():
    h = _harness()
    reader, sink = h.connected(client_id="cli", mode="cli", token="T", scopes=["operator.read"])
    err = h.request(reader, sink, "device.pair.list", {})["error"]
    assert err["details"]["missingScope"] == "operator.pairing"


def test_state_survives_a_restart(tmp_path):
    cfg = GatewayConfig(auth_mode="token", token="T", state_dir=str(tmp_path))
    first = Harness(cfg)
    key = DeviceKey()
    _, _, res = _connect(first, key)
    token = res["payload"]["auth"]["deviceToken"]
    second = Harness(cfg)  # a new gateway on the same state directory
    _, _, again = _connect(second, key, auth={"deviceToken": token})
    assert again["ok"], again
    assert (tmp_path / "gateway.sqlite3").exists()


def test_device_token_failures_are_rate_limited_per_address():
    h = _harness()
    key = DeviceKey()
    _connect(h, key)  # paired (locally)
    remote = dict(peer_ip="198.51.100.9", is_local=False)
    codes = [_connect(h, key, auth={"deviceToken": "w" * 43}, **remote)[2]["error"]["details"]["code"]
             for _ in range(11)]
    assert codes[:10] == ["AUTH_DEVICE_TOKEN_MISMATCH"] * 10 and codes[10] == "AUTH_RATE_LIMITED"
    # The shared-secret limiter is a separate key: the address can still pair with the secret.
    _, _, res = _connect(h, DeviceKey(), **remote)
    assert res["error"]["details"]["code"] == "PAIRING_REQUIRED"


def test_signature_covers_the_scopes_exactly_as_sent():
    # The reference verifies the scope list as sent: duplicates and unknown scopes are
    # part of the signed text; what is granted is filtered afterwards.
    h = _harness()
    sent = ["operator.read", "operator.read", "operator.bogus"]
    _, _, res = _connect(h, DeviceKey(), scopes=sent)
    assert res["ok"], res
    assert res["payload"]["auth"]["scopes"] == ["operator.read"]

    def resign_over_filtered(params, challenge):
        filtered = dict(params, scopes=["operator.read"])
        params["device"] = key.device_block(filtered, challenge["nonce"], challenge["ts"], "T", 3)

    key = DeviceKey()
    _, sink, res = _connect(h, key, scopes=sent, mutate=resign_over_filtered)
    assert res["error"]["details"]["code"] == "DEVICE_AUTH_SIGNATURE_INVALID"


@pytest.mark.parametrize("client_id,mode,silent", [
    ("webchat", "webchat", True),               # WebChat: its origin was checked
    ("openclaw-control-ui", "webchat", True),   # the Control UI likewise
    ("cli", "cli", False),                      # any other client sent from a web page waits
])
def test_a_loopback_page_pairs_silently_only_as_control_ui_or_webchat(client_id, mode, silent):
    from krabfast.connection import Connection
    from tests.unit.conftest import RecordingSink

    h = _harness()
    sink = RecordingSink()
    conn = Connection(h.hub, sink, peer_ip="127.0.0.1", is_local=True,
                      browser=("http://127.0.0.1:18789", "127.0.0.1:18789"))
    conn.start()
    params = _params(client_id=client_id, mode=mode)
    DeviceKey().sign_into(params, sink.frames()[0]["payload"], "T", 3)
    conn.receive(json.dumps({"type": "req", "id": "c1", "method": "connect", "params": params}).encode())
    res = sink.response("c1")
    if silent:
        assert res["ok"] and res["payload"]["auth"]["deviceToken"], res
    else:
        assert res["error"]["details"]["reason"] == "not-paired", res
