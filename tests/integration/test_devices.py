"""Device identity, pairing and device tokens against real gateway processes.

Every device here is a real Ed25519 key (tests/devicekeys.py) signing the connect the way
reference clients do. Remote devices are stood in by sockets bound to 127.0.0.2 on a
gateway started with KRABFAST_REMOTE_ADDRESSES=127.0.0.2. The `krabfast devices ...` CLI
runs as a subprocess, as an operator would run it from a second terminal.

Expected values come from docs/reference/pairing-facts.md (observed on the reference).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.devicekeys import DeviceKey
from tests.integration.helpers import TOKEN, RawWS, connect_params, run

REPO = Path(__file__).resolve().parents[2]
REMOTE = ("127.0.0.2", 0)
REMOTE_ENV = {"KRABFAST_REMOTE_ADDRESSES": "127.0.0.2"}
ADMIN_SCOPES = ["operator.admin", "operator.pairing", "operator.read"]

DEVICE_TOKEN_MISMATCH = {
    "code": "INVALID_REQUEST",
    "message": "unauthorized: device token mismatch (rotate/reissue device token)",
    "details": {"code": "AUTH_DEVICE_TOKEN_MISMATCH", "authReason": "device_token_mismatch",
                "canRetryWithDeviceToken": False, "recommendedNextStep": "update_auth_credentials"},
}
SCOPE_MISMATCH = {
    "code": "INVALID_REQUEST",
    "message": "unauthorized: device token scope mismatch (re-pair or approve scope upgrade)",
    "details": {"code": "AUTH_SCOPE_MISMATCH", "authReason": "scope_mismatch",
                "canRetryWithDeviceToken": False, "recommendedNextStep": "review_auth_configuration"},
}
NOT_APPROVED = "pairing required: device is not approved yet"
NOT_APPROVED_HINT = "Approve this device from the pending pairing requests."


# -- helpers ---------------------------------------------------------------------------------

def device_params(key: DeviceKey, challenge: dict, *, auth: dict | None = None,
                  scopes=("operator.read",), client_id: str = "cli", mode: str = "cli",
                  role: str = "operator", signed_token: str | None = None,
                  signed_at: int | None = None, **extra) -> dict:
    """Connect params carrying `auth` (default: the shared token) and a signed device block."""
    params = connect_params(token=None, client_id=client_id, mode=mode, scopes=scopes, role=role,
                            **extra)
    params["client"]["deviceFamily"] = "Linux"
    params["auth"] = dict(auth) if auth is not None else {"token": TOKEN}
    if signed_token is None:
        a = params["auth"]
        signed_token = a.get("token") or a.get("deviceToken") or ""
    ts = challenge["ts"] if signed_at is None else signed_at
    params["device"] = key.device_block(params, challenge["nonce"], ts, signed_token)
    return params


async def device_connect(url: str, key: DeviceKey, *, local_addr=None, mutate=None,
                         **kw) -> tuple[RawWS, dict]:
    """Open a socket (from `local_addr`), send a signed device connect; returns (ws, res)."""
    ws = await RawWS.open(url, **({"local_addr": local_addr} if local_addr else {}))
    params = device_params(key, ws.challenge, **kw)
    if mutate is not None:
        mutate(params, ws.challenge)
    res = await ws.call("connect", params)
    if res["ok"]:
        ws.hello = res["payload"]
    return ws, res


async def device_ok(url: str, key: DeviceKey, **kw) -> RawWS:
    ws, res = await device_connect(url, key, **kw)
    assert res["ok"] is True, res
    return ws


async def rejected(ws: RawWS, res: dict) -> dict:
    """The connect failed: the error frame came last, then a 1008 close with the message."""
    assert res["ok"] is False, res
    code, reason = await ws.wait_closed()
    assert ws.frames[-1] is res
    assert code == 1008, (code, reason)
    message = res["error"]["message"]
    assert len(reason.encode()) <= 123
    # The close reason is the message (cut to fit), or for pairing the message plus
    # " (requestId: ...)", as the reference sends.
    assert message.startswith(reason.rstrip(".")) or reason.startswith(message), (reason, message)
    return res["error"]


async def pair(url: str, key: DeviceKey, **kw) -> str:
    """Pair a local device silently (shared token); returns its device token."""
    ws = await device_ok(url, key, **kw)
    token = ws.hello["auth"]["deviceToken"]
    await ws.close()
    return token


async def admin(url: str, scopes=ADMIN_SCOPES, **kw) -> RawWS:
    return await RawWS.connected(url, client_id="gateway-client", mode="backend",
                                 scopes=list(scopes), **kw)


async def cli(url: str, *args: str, token: str = TOKEN) -> tuple[int, str, str]:
    """`python -m krabfast devices <args> --url URL --token T` as a subprocess."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "krabfast", "devices", *args, "--url", url, "--token", token,
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode, out.decode(), err.decode()


async def listing(url: str) -> dict:
    code, out, err = await cli(url, "list", "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def remote_gw(gateway_server_module):
    """A token gateway that counts peers from 127.0.0.2 as remote."""
    return gateway_server_module("--token", TOKEN, env=REMOTE_ENV)


# -- device proof failures -------------------------------------------------------------------

def _expired(p, c, key):
    p["device"] = key.device_block(p, c["nonce"], c["ts"] - 121_000, TOKEN)


def _future(p, c, key):
    p["device"] = key.device_block(p, c["nonce"], c["ts"] + 121_000, TOKEN)


def _blank_nonce(p, c, key):
    p["device"] = key.device_block(p, "  ", c["ts"], TOKEN)


def _other_key_signed(p, c, key):
    forged = DeviceKey().device_block(p, c["nonce"], c["ts"], TOKEN)
    p["device"]["signature"] = forged["signature"]


def _signed_other_scopes(p, c, key):
    p["scopes"] = ["operator.admin"]  # signed for operator.read


def _signed_other_token(p, c, key):
    p["device"] = key.device_block(p, c["nonce"], c["ts"], "not-the-token")


def _garbage_signature(p, c, key):
    p["device"]["signature"] = "%%%not-base64%%%"


def _uppercase_id(p, c, key):
    p["device"]["id"] = key.id.upper()


def _other_keys_id(p, c, key):
    p["device"]["id"] = DeviceKey().id


def _undecodable_key(p, c, key):
    p["device"].update(publicKey="AAAA", id=hashlib.sha256(b"\0\0\0").hexdigest())


PROOF_FAILURES = [
    ("nonce-required", _blank_nonce, "device nonce required", "DEVICE_AUTH_NONCE_REQUIRED",
     "device-nonce-missing"),
    ("signature-expired-past", _expired, "device signature expired", "DEVICE_AUTH_SIGNATURE_EXPIRED",
     "device-signature-stale"),
    ("signature-expired-future", _future, "device signature expired",
     "DEVICE_AUTH_SIGNATURE_EXPIRED", "device-signature-stale"),
    ("signature-other-key", _other_key_signed, "device signature invalid",
     "DEVICE_AUTH_SIGNATURE_INVALID", "device-signature"),
    ("signature-other-scopes", _signed_other_scopes, "device signature invalid",
     "DEVICE_AUTH_SIGNATURE_INVALID", "device-signature"),
    ("signature-other-token", _signed_other_token, "device signature invalid",
     "DEVICE_AUTH_SIGNATURE_INVALID", "device-signature"),
    ("signature-garbage", _garbage_signature, "device signature invalid",
     "DEVICE_AUTH_SIGNATURE_INVALID", "device-signature"),
    ("id-uppercase", _uppercase_id, "device identity mismatch", "DEVICE_AUTH_DEVICE_ID_MISMATCH",
     "device-id-mismatch"),
    ("id-of-other-key", _other_keys_id, "device identity mismatch",
     "DEVICE_AUTH_DEVICE_ID_MISMATCH", "device-id-mismatch"),
    ("public-key-invalid", _undecodable_key, "device public key invalid",
     "DEVICE_AUTH_PUBLIC_KEY_INVALID", "device-public-key"),
]


@pytest.mark.parametrize("mutate,message,code,reason", [p[1:] for p in PROOF_FAILURES],
                         ids=[p[0] for p in PROOF_FAILURES])
def test_device_proof_failure(gw, mutate, message, code, reason):
    async def body():
        key = DeviceKey()
        ws, res = await device_connect(gw.url, key, mutate=lambda p, c: mutate(p, c, key))
        err = await rejected(ws, res)
        assert err == {"code": "INVALID_REQUEST", "message": message,
                       "details": {"code": code, "reason": reason}}
        assert ws.close_reason == message
    run(body())


def test_nonce_from_another_socket_is_a_mismatch(gw):
    """A signature captured for one socket's challenge is useless on another socket."""
    async def body():
        key = DeviceKey()
        first = await RawWS.open(gw.url)
        second = await RawWS.open(gw.url)
        assert first.challenge["nonce"] != second.challenge["nonce"]
        params = device_params(key, first.challenge)
        res = await second.call("connect", params)
        err = await rejected(second, res)
        assert err == {"code": "INVALID_REQUEST", "message": "device nonce mismatch",
                       "details": {"code": "DEVICE_AUTH_NONCE_MISMATCH",
                                   "reason": "device-nonce-mismatch"}}
        # The socket the nonce belongs to can still use it.
        ok = await first.call("connect", params)
        assert ok["ok"] is True, ok
        await first.close()
    run(body())


def test_bad_signature_wins_over_wrong_shared_token(gw):
    async def body():
        key = DeviceKey()
        ws, res = await device_connect(gw.url, key, auth={"token": "WRONG"}, signed_token="other")
        err = await rejected(ws, res)
        assert err["details"]["code"] == "DEVICE_AUTH_SIGNATURE_INVALID"
    run(body())


def test_signed_at_window_and_v2_signatures(gw):
    """signedAt need only be within +-120 s of the gateway clock; the v2 form is accepted."""
    async def body():
        for delta in (-119_000, 119_000):
            key = DeviceKey()
            ws, res = await device_connect(
                gw.url, key, mutate=lambda p, c, k=key, d=delta:
                p.update(device=k.device_block(p, c["nonce"], c["ts"] + d, TOKEN)))
            assert res["ok"] is True, (delta, res)
            await ws.close()
        key = DeviceKey()
        ws, res = await device_connect(
            gw.url, key, mutate=lambda p, c: p.update(
                device=key.device_block(p, c["nonce"], c["ts"], TOKEN, version=2)))
        assert res["ok"] is True, res
        await ws.close()
    run(body())


def test_device_token_mismatch(gw):
    async def body():
        key, other = DeviceKey(), DeviceKey()
        token = await pair(gw.url, key)
        other_token = await pair(gw.url, other)
        cases = {
            "wrong token": (key, {"deviceToken": "x" * 43}),
            "another device's token": (key, {"deviceToken": other_token}),
            "token of an unpaired device": (DeviceKey(), {"deviceToken": token}),
            "GatewayClient form, wrong": (key, {"token": "y" * 43, "deviceToken": "y" * 43}),
        }
        for label, (k, auth) in cases.items():
            ws, res = await device_connect(gw.url, k, auth=auth)
            err = await rejected(ws, res)
            assert err == DEVICE_TOKEN_MISMATCH, label
            assert ws.close_reason == DEVICE_TOKEN_MISMATCH["message"]
        # An operator token presented for the node role.
        ws, res = await device_connect(gw.url, key, auth={"deviceToken": token}, role="node",
                                       scopes=(), client_id="node-host", mode="node")
        assert await rejected(ws, res) == DEVICE_TOKEN_MISMATCH
        # The right token still works after all those failures.
        ws = await device_ok(gw.url, key, auth={"deviceToken": token})
        assert ws.hello["auth"]["deviceToken"] == token
        await ws.close()
    run(body())


def test_device_token_scope_mismatch(gw):
    async def body():
        key = DeviceKey()
        token = await pair(gw.url, key, scopes=("operator.read",))
        for wider in (("operator.admin",), ("operator.read", "operator.write"),
                      ("operator.pairing",)):
            ws, res = await device_connect(gw.url, key, auth={"deviceToken": token}, scopes=wider)
            assert await rejected(ws, res) == SCOPE_MISMATCH, wider
            assert ws.close_reason == SCOPE_MISMATCH["message"]
        # Narrower (none) is fine: the token is still echoed.
        ws = await device_ok(gw.url, key, auth={"deviceToken": token}, scopes=())
        assert ws.hello["auth"]["scopes"] == [] and ws.hello["auth"]["deviceToken"] == token
        await ws.close()
    run(body())


def test_device_token_without_device_identity(gw):
    async def body():
        key = DeviceKey()
        token = await pair(gw.url, key)
        ws = await RawWS.open(gw.url)
        params = connect_params(token=None, client_id="cli", mode="cli", scopes=["operator.read"])
        params["auth"] = {"deviceToken": token}
        err = await rejected(ws, await ws.call("connect", params))
        assert err == {"code": "NOT_PAIRED", "message": "device identity required",
                       "details": {"code": "DEVICE_IDENTITY_REQUIRED"}}
    run(body())


# -- token lifecycle -------------------------------------------------------------------------

def test_token_lifecycle_with_the_cli(gw):
    async def body():
        key = DeviceKey()
        scopes = ("operator.read", "operator.pairing")
        # 1. A local device pairs silently and gets a token in hello-ok.
        ws = await device_ok(gw.url, key, scopes=scopes)
        auth = ws.hello["auth"]
        assert auth["role"] == "operator" and auth["scopes"] == list(scopes)
        token = auth["deviceToken"]
        assert len(token) == 43 and isinstance(auth["issuedAtMs"], int)
        await ws.close()
        listed = await listing(gw.url)
        row = next(d for d in listed["paired"] if d["deviceId"] == key.id)
        assert row["approvedVia"] == "silent" and row["publicKey"] == key.public_key
        assert row["tokens"][0]["role"] == "operator" and "token" not in row["tokens"][0]
        assert token not in json.dumps(listed)

        # 2. The token alone reconnects (both accepted auth forms), and is echoed.
        held = await device_ok(gw.url, key, auth={"deviceToken": token}, scopes=scopes)
        assert held.hello["auth"]["deviceToken"] == token
        assert held.hello["auth"]["issuedAtMs"] == auth["issuedAtMs"]
        both = await device_ok(gw.url, key, auth={"token": token, "deviceToken": token},
                               scopes=scopes)
        # It works: a pairing-scoped call over the device token (sees only itself).
        res = await held.call("device.pair.list", {})
        assert res["ok"] and [d["deviceId"] for d in res["payload"]["paired"]] == [key.id]

        # 3. `krabfast devices rotate`: both open sockets close 4001, the old token is dead.
        code, out, err = await cli(gw.url, "rotate", key.id)
        assert code == 0, err
        rotated = json.loads(out)
        assert rotated["deviceId"] == key.id and rotated["role"] == "operator"
        assert rotated["tokenDelivery"] == "withheld-cross-device" and "token" not in rotated
        assert rotated["scopes"] == ["operator.pairing", "operator.read"]
        for sock in (held, both):
            assert await sock.wait_closed() == (4001, "device removed")
        ws, res = await device_connect(gw.url, key, auth={"deviceToken": token}, scopes=scopes)
        assert await rejected(ws, res) == DEVICE_TOKEN_MISMATCH

        # 4. The shared secret gets a fresh token; `devices revoke` kills it the same way.
        token2 = await pair(gw.url, key, scopes=scopes)
        assert token2 != token
        held = await device_ok(gw.url, key, auth={"deviceToken": token2}, scopes=scopes)
        code, out, err = await cli(gw.url, "revoke", key.id, "--role", "operator")
        assert code == 0, err
        revoked = json.loads(out)
        assert revoked["deviceId"] == key.id and revoked["role"] == "operator"
        assert isinstance(revoked["revokedAtMs"], int)
        assert await held.wait_closed() == (4001, "device removed")
        ws, res = await device_connect(gw.url, key, auth={"deviceToken": token2}, scopes=scopes)
        assert await rejected(ws, res) == DEVICE_TOKEN_MISMATCH

        # 5. Re-approved (silently, on loopback) with the shared secret; `devices remove`
        # closes the device's sockets and forgets it.
        token3 = await pair(gw.url, key, scopes=scopes)
        held = await device_ok(gw.url, key, auth={"deviceToken": token3}, scopes=scopes)
        code, out, err = await cli(gw.url, "remove", key.id)
        assert code == 0, err
        assert out.strip() == f"Removed {key.id}"
        assert await held.wait_closed() == (4001, "device removed")
        ws, res = await device_connect(gw.url, key, auth={"deviceToken": token3}, scopes=scopes)
        assert await rejected(ws, res) == DEVICE_TOKEN_MISMATCH
        listed = await listing(gw.url)
        assert key.id not in [d["deviceId"] for d in listed["paired"]]
        assert key.id not in [p["deviceId"] for p in listed["pending"]]
        code, out, err = await cli(gw.url, "remove", key.id)
        assert code == 1 and "unknown deviceId" in err
    run(body())


def test_rotate_with_scopes_and_rename_with_the_cli(gw):
    async def body():
        key = DeviceKey()
        scopes = ("operator.read", "operator.write")
        await pair(gw.url, key, scopes=scopes)
        code, out, err = await cli(gw.url, "rotate", key.id, "--scope", "operator.read")
        assert code == 0, err
        assert json.loads(out)["scopes"] == ["operator.read"]
        # Outside the approved baseline: denied.
        code, out, err = await cli(gw.url, "rotate", key.id, "--scope", "operator.admin")
        assert code == 1 and "device token rotation denied" in err
        code, out, err = await cli(gw.url, "rename", key.id, "Kitchen")
        assert code == 0, err
        listed = await listing(gw.url)
        row = next(d for d in listed["paired"] if d["deviceId"] == key.id)
        assert row["operatorLabel"] == "Kitchen"
        assert [t["scopes"] for t in row["tokens"]] == [["operator.read"]]
    run(body())


def test_shared_token_reconnect_reuses_the_device_token(gw):
    """Reference §2a: the same device with the same role and scopes gets the same token back
    from a later shared-token connect (ensureToken reuses a covering token), so a second
    process sharing the identity does not invalidate the first one's token."""
    async def body():
        key = DeviceKey()
        first = await pair(gw.url, key)
        second = await pair(gw.url, key)
        assert second == first
        ws = await device_ok(gw.url, key, auth={"deviceToken": first})
        await ws.close()
    run(body())


# -- a remote device waits for approval ------------------------------------------------------

def test_remote_device_waits_for_cli_approval(remote_gw):
    async def body():
        url = remote_gw.url
        watcher = await RawWS.connected(url, client_id="cli", mode="cli",
                                        scopes=["operator.pairing"])
        assert watcher.hello["auth"]["scopes"] == ["operator.pairing"]
        key = DeviceKey()
        ws, res = await device_connect(url, key, local_addr=REMOTE, display_name="remote-dev")
        err = await rejected(ws, res)
        details = err["details"]
        request_id = details["requestId"]
        uuid.UUID(request_id)
        assert err["code"] == "NOT_PAIRED" and err["message"] == NOT_APPROVED
        assert details == {"code": "PAIRING_REQUIRED", "reason": "not-paired",
                           "requestId": request_id, "remediationHint": NOT_APPROVED_HINT,
                           "deviceId": key.id, "requestedRole": "operator",
                           "requestedScopes": ["operator.read"]}
        assert list(details) == ["code", "reason", "requestId", "remediationHint", "deviceId",
                                 "requestedRole", "requestedScopes"]

        requested = (await watcher.event("device.pair.requested"))["payload"]
        assert requested["requestId"] == request_id and requested["deviceId"] == key.id
        assert requested["publicKey"] == key.public_key
        assert requested["remoteIp"] == "127.0.0.2" and requested["displayName"] == "remote-dev"
        assert requested["role"] == "operator" and requested["scopes"] == ["operator.read"]
        assert requested["silent"] is False and requested["isRepair"] is False

        # The device keeps retrying while an operator approves from a second terminal.
        attempts: list[dict] = []

        async def keep_retrying() -> dict:
            while True:
                ws, res = await device_connect(url, key, local_addr=REMOTE,
                                               display_name="remote-dev")
                attempts.append(res)
                if res["ok"]:
                    return ws
                await rejected(ws, res)
                assert res["error"]["details"]["requestId"] == request_id
                await asyncio.sleep(0.1)

        retrying = asyncio.create_task(keep_retrying())
        while len(attempts) < 2 and not retrying.done():
            await asyncio.sleep(0.05)
        code, out, err_text = await cli(url, "approve", request_id)
        assert code == 0, err_text
        assert out.strip() == f"Approved {key.id} ({request_id})"
        resolved = await watcher.event("device.pair.resolved")
        assert resolved["payload"]["requestId"] == request_id
        assert resolved["payload"]["deviceId"] == key.id
        assert resolved["payload"]["decision"] == "approved"

        device_ws = await asyncio.wait_for(retrying, 10)
        token = device_ws.hello["auth"]["deviceToken"]
        assert device_ws.hello["auth"]["scopes"] == ["operator.read"] and len(token) == 43
        assert sum(1 for a in attempts if not a["ok"]) >= 2
        res = await device_ws.call("health", {})
        assert res["ok"], res
        await device_ws.close()
        # Retries refreshed the one request: a single `requested` event was broadcast.
        await watcher.barrier()
        assert len(watcher.events("device.pair.requested")) == 1
        # From now on the token alone works from the remote address.
        again = await device_ok(url, key, local_addr=REMOTE, auth={"deviceToken": token})
        assert again.hello["auth"]["deviceToken"] == token
        await again.close()
        listed = await listing(url)
        row = next(d for d in listed["paired"] if d["deviceId"] == key.id)
        assert row["approvedVia"] == "owner"
        assert not [p for p in listed["pending"] if p["deviceId"] == key.id]
        await watcher.close()
    run(body())


async def _remote_paired(url: str, watcher: RawWS, key: DeviceKey, scopes) -> str:
    """Pair a remote device through an approval; returns its device token."""
    ws, res = await device_connect(url, key, local_addr=REMOTE, scopes=scopes)
    await rejected(ws, res)
    approved = await watcher.call("device.pair.approve",
                                  {"requestId": res["error"]["details"]["requestId"]})
    assert approved["ok"], approved
    ws = await device_ok(url, key, local_addr=REMOTE, scopes=scopes)
    await ws.close()
    return ws.hello["auth"]["deviceToken"]


def test_remote_scope_upgrade_waits_for_approval(remote_gw):
    async def body():
        url = remote_gw.url
        watcher = await admin(url)
        key = DeviceKey()
        token = await _remote_paired(url, watcher, key, ("operator.read",))
        wider = ("operator.read", "operator.write")
        ws, res = await device_connect(url, key, local_addr=REMOTE, scopes=wider)
        err = await rejected(ws, res)
        details = err["details"]
        assert err["code"] == "NOT_PAIRED"
        assert err["message"] == ("pairing required: device is asking for more scopes than "
                                  "currently approved")
        assert details["reason"] == "scope-upgrade" and details["requestedScopes"] == list(wider)
        assert details["approvedRoles"] == ["operator"]
        assert details["approvedScopes"] == ["operator.read"]
        requested = (await watcher.event(
            "device.pair.requested",
            pred=lambda f: f["payload"]["requestId"] == details["requestId"]))["payload"]
        assert requested["isRepair"] is True
        # The old token keeps working while the upgrade is pending.
        ok = await device_ok(url, key, local_addr=REMOTE, auth={"deviceToken": token})
        await ok.close()
        approved = await watcher.call("device.pair.approve", {"requestId": details["requestId"]})
        assert approved["ok"], approved
        assert set(approved["payload"]["device"]["scopes"]) == set(wider)
        upgraded = await device_ok(url, key, local_addr=REMOTE, scopes=wider)
        assert upgraded.hello["auth"]["scopes"] == list(wider)
        await upgraded.close()
        await watcher.close()
    run(body())


def test_approving_a_scope_upgrade_retires_the_old_token(remote_gw):
    async def body():
        url = remote_gw.url
        watcher = await admin(url)
        key = DeviceKey()
        token = await _remote_paired(url, watcher, key, ("operator.read",))
        ws, res = await device_connect(url, key, local_addr=REMOTE,
                                       scopes=("operator.read", "operator.write"))
        await rejected(ws, res)
        approved = await watcher.call("device.pair.approve",
                                      {"requestId": res["error"]["details"]["requestId"]})
        assert approved["ok"], approved
        ws, res = await device_connect(url, key, local_addr=REMOTE, auth={"deviceToken": token})
        assert res["ok"] is False, res
        assert await rejected(ws, res) == DEVICE_TOKEN_MISMATCH
        await watcher.close()
    run(body())


def test_pairing_required_close_reason_names_the_request(remote_gw):
    """Reference §2e: the close reason is `<message> (requestId: <id>)`, cut to 123 bytes."""
    async def body():
        ws, res = await device_connect(remote_gw.url, DeviceKey(), local_addr=REMOTE)
        await rejected(ws, res)
        request_id = res["error"]["details"]["requestId"]
        assert ws.close_reason == f"{NOT_APPROVED} (requestId: {request_id})"
    run(body())


def test_broader_retry_supersedes_the_pending_request(remote_gw):
    async def body():
        url = remote_gw.url
        watcher = await admin(url)
        key = DeviceKey()
        ws, res = await device_connect(url, key, local_addr=REMOTE, scopes=("operator.read",))
        await rejected(ws, res)
        old = res["error"]["details"]["requestId"]
        await watcher.event("device.pair.requested", pred=lambda f: f["payload"]["requestId"] == old)
        # Same or narrower: the same request, no event.
        ws, res = await device_connect(url, key, local_addr=REMOTE, scopes=())
        await rejected(ws, res)
        assert res["error"]["details"]["requestId"] == old
        # Broader: superseded.
        ws, res = await device_connect(url, key, local_addr=REMOTE,
                                       scopes=("operator.read", "operator.write"))
        await rejected(ws, res)
        new = res["error"]["details"]["requestId"]
        assert new != old
        resolved = await watcher.event("device.pair.resolved",
                                       pred=lambda f: f["payload"]["requestId"] == old)
        assert resolved["payload"]["decision"] == "rejected"
        requested = await watcher.event("device.pair.requested",
                                        pred=lambda f: f["payload"]["requestId"] == new)
        assert set(requested["payload"]["scopes"]) == {"operator.read", "operator.write"}
        await watcher.close()
    run(body())


def test_rejected_request_and_local_autoapprove_off(gateway_server):
    """--no-auto-approve-local: loopback devices wait too; reject resolves the request."""
    gw = gateway_server("--token", TOKEN, "--no-auto-approve-local")

    async def body():
        watcher = await admin(gw.url)
        key = DeviceKey()
        ws, res = await device_connect(gw.url, key)
        err = await rejected(ws, res)
        assert err["details"]["reason"] == "not-paired"
        request_id = err["details"]["requestId"]
        requested = (await watcher.event("device.pair.requested"))["payload"]
        assert requested["requestId"] == request_id and "remoteIp" not in requested
        code, out, err_text = await cli(gw.url, "reject", request_id)
        assert code == 0, err_text
        assert out.strip() == f"Rejected {key.id}"
        resolved = (await watcher.event("device.pair.resolved"))["payload"]
        assert resolved["requestId"] == request_id and resolved["decision"] == "rejected"
        code, out, err_text = await cli(gw.url, "approve", request_id)
        assert code == 1 and "unknown requestId" in err_text
        # The next attempt is a new request.
        ws, res = await device_connect(gw.url, key)
        err = await rejected(ws, res)
        assert err["details"]["requestId"] != request_id
        await watcher.close()
    run(body())


# -- restarts --------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_pairing_survives_restart(gateway_server, tmp_path, how):
    state = tmp_path / f"state-{how}"
    args = ("--token", TOKEN, "--state-dir", str(state))
    gw = gateway_server(*args, env=REMOTE_ENV)

    async def before():
        key = DeviceKey()
        ws = await device_ok(gw.url, key, scopes=("operator.read", "operator.write"))
        token = ws.hello["auth"]["deviceToken"]
        # A remote device's pending request is state too.
        waiting = DeviceKey()
        w, res = await device_connect(gw.url, waiting, local_addr=REMOTE)
        await rejected(w, res)
        return key, token, ws, waiting, res["error"]["details"]["requestId"]

    async def after(key, token, waiting, request_id, url):
        ws = await device_ok(url, key, auth={"deviceToken": token},
                             scopes=("operator.read", "operator.write"))
        assert ws.hello["auth"]["deviceToken"] == token
        assert ws.hello["auth"]["scopes"] == ["operator.read", "operator.write"]
        await ws.close()
        bad, res = await device_connect(url, key, auth={"deviceToken": "z" * 43})
        assert await rejected(bad, res) == DEVICE_TOKEN_MISMATCH
        listed = await listing(url)
        assert [p["requestId"] for p in listed["pending"]] == [request_id]
        code, out, err = await cli(url, "approve", request_id)
        assert code == 0, err
        ok = await device_ok(url, waiting, local_addr=REMOTE)
        assert ok.hello["auth"]["deviceToken"]
        await ok.close()

    async def first_phase():
        key, token, ws, waiting, request_id = await before()
        if how == "sigkill":
            gw.process.kill()  # right after pairing: no chance to flush or close anything
        else:
            gw.process.send_signal(signal.SIGTERM)
            code, _ = await ws.wait_closed()
            assert code in (1001, 1012), code
        return key, token, waiting, request_id

    key, token, waiting, request_id = run(first_phase())
    assert gw.process.wait(10) == (-signal.SIGKILL if how == "sigkill" else 0)
    gw2 = gateway_server(*args, env=REMOTE_ENV)
    run(after(key, token, waiting, request_id, gw2.url))
    assert (state / "gateway.sqlite3").exists()


# -- concurrent approvals --------------------------------------------------------------------

def test_concurrent_approvals(gateway_server):
    gw = gateway_server("--token", TOKEN, env=REMOTE_ENV)

    async def body():
        url = gw.url
        keys = [DeviceKey() for _ in range(6)]

        async def waiting(key):
            ws, res = await device_connect(url, key, local_addr=REMOTE)
            await rejected(ws, res)
            assert res["error"]["details"]["reason"] == "not-paired"
            return res["error"]["details"]["requestId"]

        request_ids = await asyncio.gather(*(waiting(k) for k in keys))
        assert len(set(request_ids)) == len(keys)
        admins = await asyncio.gather(*(admin(url) for _ in range(3)))

        # Four requests, each approved twice at once from two different admin sockets:
        # exactly one approval of each wins, the other finds no such request.
        calls = []
        for i, rid in enumerate(request_ids[:4]):
            for j in (0, 1):
                calls.append((rid, admins[(i + j) % 3].call("device.pair.approve",
                                                            {"requestId": rid})))
        calls.append((request_ids[5], admins[2].call("device.pair.approve",
                                                     {"requestId": request_ids[5]})))
        results = await asyncio.gather(*(c for _, c in calls))
        by_request: dict[str, list[dict]] = {}
        for (rid, _), res in zip(calls, results):
            by_request.setdefault(rid, []).append(res)
        for rid, outcomes in by_request.items():
            wins = [r for r in outcomes if r["ok"]]
            losses = [r for r in outcomes if not r["ok"]]
            assert len(wins) == 1, outcomes
            assert wins[0]["payload"]["requestId"] == rid
            assert wins[0]["payload"]["device"]["approvedVia"] == "owner"
            for loss in losses:
                assert loss["error"] == {"code": "INVALID_REQUEST", "message": "unknown requestId"}

        # A CLI approve races an RPC approve of the same request.
        rid = request_ids[4]
        cli_task = asyncio.create_task(cli(url, "approve", rid))
        await asyncio.sleep(0.2)  # about when the CLI process has connected
        rpc = await admins[0].call("device.pair.approve", {"requestId": rid})
        code, out, err = await cli_task
        cli_won = code == 0
        print(f"CLI-vs-RPC approve race won by {'CLI' if cli_won else 'RPC'}")
        assert cli_won != rpc["ok"], (code, out, err, rpc)
        if cli_won:
            assert out.strip() == f"Approved {keys[4].id} ({rid})"
            assert rpc["error"] == {"code": "INVALID_REQUEST", "message": "unknown requestId"}
        else:
            assert code == 1 and "INVALID_REQUEST: unknown requestId" in err, err
            assert rpc["payload"]["requestId"] == rid

        # Every device now connects, concurrently.
        sockets = await asyncio.gather(*(device_ok(url, k, local_addr=REMOTE) for k in keys))
        tokens = {ws.hello["auth"]["deviceToken"] for ws in sockets}
        assert len(tokens) == len(keys)
        listed = await listing(url)
        assert listed["pending"] == []
        assert {d["deviceId"] for d in listed["paired"]} == {k.id for k in keys}
        for ws in [*sockets, *admins]:
            await ws.close()
    run(body())


# -- presence --------------------------------------------------------------------------------

async def _presence_rows(watcher: RawWS, device_id: str) -> list[dict]:
    res = await watcher.call("system-presence", {})
    assert res["ok"], res
    return [e for e in res["payload"] if e.get("deviceId") == device_id]


async def _two_device_sockets(url: str, key: DeviceKey) -> tuple[RawWS, RawWS, RawWS]:
    scopes = ("operator.read", "operator.write")
    watcher = await RawWS.connected(url, client_id="gateway-client", mode="backend",
                                    scopes=["operator.read"])
    ui = dict(client_id="openclaw-linux", mode="ui", scopes=scopes, display_name="pres-dev")
    first = await device_ok(url, key, instance_id="inst-1", **ui)
    await watcher.event("presence", pred=lambda f: any(
        e.get("deviceId") == key.id for e in f["payload"]["presence"]))
    token = first.hello["auth"]["deviceToken"]
    second = await device_ok(url, key, instance_id="inst-2", auth={"deviceToken": token}, **ui)
    return watcher, first, second


def test_presence_one_row_per_device(gw):
    async def body():
        key = DeviceKey()
        watcher, first, second = await _two_device_sockets(gw.url, key)
        frame = await watcher.event("presence", pred=lambda f: any(
            e.get("deviceId") == key.id and e.get("instanceId") == "inst-2"
            for e in f["payload"]["presence"]))
        assert isinstance(frame["stateVersion"]["presence"], int)
        rows = [e for e in frame["payload"]["presence"] if e.get("deviceId") == key.id]
        assert len(rows) == 1, rows
        rows = await _presence_rows(watcher, key.id)
        assert len(rows) == 1, rows
        row = rows[0]
        assert row["deviceId"] == key.id and row["roles"] == ["operator"]
        assert row["scopes"] == ["operator.read", "operator.write"]
        assert row["mode"] == "ui" and row["reason"] == "connect" and "ip" not in row
        assert row["platform"] == "linux" and row["deviceFamily"] == "Linux"
        # The backend watcher itself (ephemeral mode) has no row.
        everyone = (await watcher.call("system-presence", {}))["payload"]
        assert not [e for e in everyone if e.get("mode") == "backend"]
        for ws in (first, second, watcher):
            await ws.close()
    run(body())


def test_presence_row_stays_while_another_socket_of_the_device_is_open(gw):
    """Closing one of a device's two sockets must not mark it disconnected (reference §5:
    the other socket's row is unchanged)."""
    async def body():
        key = DeviceKey()
        watcher, first, second = await _two_device_sockets(gw.url, key)
        await first.close()
        await watcher.barrier()
        rows = await _presence_rows(watcher, key.id)
        assert any(r["reason"] == "connect" for r in rows), rows
        await second.close()
        await watcher.close()
    run(body())
