"""Shared-secret auth against real gateway processes (token and password modes).

The 10-failure lockout cannot be exercised from here: every address a test can bind to
(127.0.0.1, 127.0.0.2, ...) is loopback, and loopback is exempt (reference behaviour).
tests/unit/test_handshake.py covers the lockout with a non-loopback peer. What is tested
here is the exemption itself, from 127.0.0.1 and from 127.0.0.2.
"""

from __future__ import annotations

import pytest

from tests.integration.helpers import TOKEN, RawWS, connect_params, run

PASSWORD = "pw-Krab-1"
TOKEN_MISMATCH_CLI = ("unauthorized: gateway token mismatch "
                      "(use this gateway's gateway.auth.token or pair the device)")


async def _rejected(url: str, connect_kw: dict | None = None, **params) -> tuple[dict, RawWS]:
    ws = await RawWS.open(url, **(connect_kw or {}))
    res = await ws.call("connect", connect_params(**params))
    await ws.wait_closed()
    assert res["ok"] is False, res
    assert ws.frames[-1] is res  # the error comes before the close
    assert ws.close_code == 1008
    assert len(ws.close_reason.encode()) <= 123
    err = res["error"]
    assert err["code"] in ("INVALID_REQUEST", "NOT_PAIRED")
    assert "retryable" not in err and "retryAfterMs" not in err  # only for AUTH_RATE_LIMITED
    return err, ws


@pytest.fixture(scope="module")
def pw_gw(gateway_server_module):
    return gateway_server_module("--auth", "password", "--password", PASSWORD)


def test_right_token_connects(gw):
    async def body():
        ws = await RawWS.connected(gw.url, client_id="cli", mode="cli", scopes=["operator.read"])
        assert ws.hello["auth"]["role"] == "operator"
        assert ws.hello["auth"]["scopes"] == ["operator.read"]
        await ws.close()
    run(body())


def test_wrong_token(gw):
    async def body():
        err, ws = await _rejected(gw.url, token="WRONG", client_id="cli", mode="cli")
        assert err == {"code": "INVALID_REQUEST", "message": TOKEN_MISMATCH_CLI,
                       "details": {"code": "AUTH_TOKEN_MISMATCH", "authReason": "token_mismatch",
                                   "canRetryWithDeviceToken": False,
                                   "recommendedNextStep": "update_auth_credentials"}}
        assert TOKEN_MISMATCH_CLI.startswith(ws.close_reason.rstrip("."))
        # Non-CLI clients get the generic hint.
        err, _ = await _rejected(gw.url, token="WRONG", client_id="gateway-client", mode="backend")
        assert err["message"] == "unauthorized: gateway token mismatch (provide gateway auth token)"
    run(body())


@pytest.mark.parametrize("auth", [None, {}, {"token": ""}], ids=["no-auth", "empty-auth", "empty-token"])
def test_missing_token_and_no_device_is_not_paired(gw, auth):
    # As the reference: no credential and no device asks for a device identity.
    async def body():
        extra = {} if auth is None else {"auth": auth}
        err, ws = await _rejected(gw.url, token=None, **extra)
        assert err == {"code": "NOT_PAIRED", "message": "device identity required",
                       "details": {"code": "DEVICE_IDENTITY_REQUIRED"}}
        assert (ws.close_code, ws.close_reason) == (1008, "device identity required")
    run(body())


def test_password_sent_to_token_gateway_is_a_mismatch(gw):
    async def body():
        err, _ = await _rejected(gw.url, token=None, password="x", client_id="cli", mode="cli")
        assert err["details"]["code"] == "AUTH_TOKEN_MISMATCH"
        assert err["message"] == TOKEN_MISMATCH_CLI
    run(body())


def test_password_mode(pw_gw):
    async def body():
        ok = await RawWS.connected(pw_gw.url, token=None, password=PASSWORD)
        assert ok.hello["auth"]["role"] == "operator"
        await ok.close()
        err, _ = await _rejected(pw_gw.url, token=None, password="nope", client_id="cli", mode="cli")
        assert err["details"] == {"code": "AUTH_PASSWORD_MISMATCH", "authReason": "password_mismatch",
                                  "canRetryWithDeviceToken": False,
                                  "recommendedNextStep": "update_auth_credentials"}
        assert err["message"] == ("unauthorized: gateway password mismatch "
                                  "(use this gateway's gateway.auth.password)")
        err, _ = await _rejected(pw_gw.url, token=None)  # nothing sent: as the reference
        assert err["details"]["code"] == "DEVICE_IDENTITY_REQUIRED"
    run(body())


@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.2"])
def test_loopback_is_exempt_from_lockout(gw, source):
    async def body():
        kw = {"local_addr": (source, 0)}
        for _ in range(15):
            err, _ = await _rejected(gw.url, connect_kw=kw, token="WRONG")
            assert err["details"]["code"] == "AUTH_TOKEN_MISMATCH"
        ws = await RawWS.connected(gw.url, connect_kw=kw, token=TOKEN)
        assert ws.hello["type"] == "hello-ok"
        await ws.close()
    run(body())
