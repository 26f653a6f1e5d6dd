"""The reference client library with a device identity against krabfast.

device_client_driver.mjs is copied into a temp dir and run with Node 24; it imports
@openclaw/gateway-client by file URL from the reference install, generates an Ed25519
identity with node:crypto (the package needs hostDeps.signDevicePayload and
publicKeyRawBase64UrlFromPem), and connects four times as `cli`/`cli` with scopes
["operator.read"]: with the shared token (the gateway pairs the device and issues a device
token), with the device token only, with the token the client loads from its store, and
with a stale stored token (refused; the client clears it). See pairing-facts.md §7 for the
same script's output against the reference gateway.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import TOKEN, json_lines, run_node

pytestmark = pytest.mark.interop

DRIVER = Path(__file__).with_name("device_client_driver.mjs")
REPO = Path(__file__).resolve().parents[2]


class Run:
    def __init__(self, proc, gateway) -> None:
        self.returncode = proc.returncode
        self.stderr = proc.stderr
        self.lines = json_lines(proc.stdout)
        self.gateway = gateway

    def kind(self, kind: str, phase: str | None = None) -> list[dict]:
        return [line for line in self.lines if line["kind"] == kind
                and (phase is None or line.get("phase") == phase)]

    def one(self, kind: str, phase: str | None = None) -> dict:
        found = self.kind(kind, phase)
        assert len(found) == 1, f"{len(found)} x {kind}/{phase}\n{self.describe()}"
        return found[0]

    @property
    def device_id(self) -> str:
        return self.one("identity")["deviceId"]

    def describe(self) -> str:
        lines = "\n".join(str(line)[:400] for line in self.lines)
        return (f"exit {self.returncode}\n--- stdout (json lines)\n{lines}\n--- stderr\n"
                f"{self.stderr[-3000:]}\n--- gateway log\n{self.gateway.output()[-3000:]}")


@pytest.fixture(scope="module")
def session(reference, gateway_server_module, tmp_path_factory) -> Run:
    gw = gateway_server_module("--token", TOKEN)
    tmp = tmp_path_factory.mktemp("device-client")
    script = tmp / DRIVER.name
    shutil.copyfile(DRIVER, script)
    home = tmp / "home"
    home.mkdir()
    proc = run_node(reference, [str(script), str(reference.gateway_client_entry), gw.url, TOKEN],
                    cwd=tmp, home=home, timeout=60)
    return Run(proc, gw)


def test_driver_completes(session):
    assert session.returncode == 0, session.describe()
    assert session.kind("done") and not session.kind("timeout"), session.describe()
    assert [line["phase"] for line in session.kind("hello")] == ["shared", "device", "stored"], \
        session.describe()


def test_shared_token_connect_issues_a_device_token(session, ref_schema):
    hello = session.one("hello", "shared")["hello"]
    assert ref_schema("HelloOk", hello) == []
    auth = hello["auth"]
    assert auth["role"] == "operator" and auth["scopes"] == ["operator.read"]
    token = auth["deviceToken"]
    assert isinstance(token, str) and len(token) == 43, auth
    assert isinstance(auth["issuedAtMs"], int)
    stored = session.one("store", "shared")
    assert stored["deviceId"] == session.device_id and stored["role"] == "operator"
    assert stored["token"] == token and stored["scopes"] == ["operator.read"]
    health = session.one("result", "shared")
    assert health["method"] == "health" and health["ok"], session.describe()


def test_device_token_only_reconnect(session, ref_schema):
    token = session.one("hello", "shared")["auth"]["deviceToken"]
    hello = session.one("hello", "device")["hello"]
    assert ref_schema("HelloOk", hello) == []
    auth = hello["auth"]
    assert auth["role"] == "operator" and auth["scopes"] == ["operator.read"]
    assert auth["deviceToken"] == token  # echoed back, not re-minted
    assert auth["issuedAtMs"] == session.one("hello", "shared")["auth"]["issuedAtMs"]
    presence = session.one("result", "device")
    assert presence["method"] == "system-presence" and presence["ok"], session.describe()
    assert isinstance(presence["payload"], list)
    for entry in presence["payload"]:
        assert ref_schema("PresenceEntry", entry) == []
    # cli mode is ephemeral: the device has no presence row.
    assert not [e for e in presence["payload"] if e.get("deviceId") == session.device_id]


def test_stored_token_reconnect(session):
    token = session.one("hello", "shared")["auth"]["deviceToken"]
    auth = session.one("hello", "stored")["auth"]
    assert auth["deviceToken"] == token and auth["scopes"] == ["operator.read"]
    assert session.one("result", "stored")["ok"], session.describe()


def test_signed_payloads(session):
    """v3 with signedAt = challenge ts; the signed token is the credential actually sent."""
    device_id = session.device_id
    token = session.one("hello", "shared")["auth"]["deviceToken"]
    expected_token = {"shared": TOKEN, "device": token, "stored": token, "stale": "A" * 43}
    for phase, signed_token in expected_token.items():
        payload = session.one("signed", phase)["payload"]
        parts = payload.split("|")
        assert parts[:6] == ["v3", device_id, "cli", "cli", "operator", "operator.read"], payload
        assert parts[6].isdigit()
        assert parts[7] == signed_token, (phase, payload)
        assert parts[8] and parts[9:] == ["linux", ""], payload


def test_stale_stored_token_is_refused_and_cleared(session):
    error = session.kind("connect-error", "stale")[0]["error"]
    assert error["code"] == "INVALID_REQUEST", error
    assert error["details"]["code"] == "AUTH_DEVICE_TOKEN_MISMATCH", error
    assert error["message"] == "unauthorized: device token mismatch (rotate/reissue device token)"
    cleared = session.kind("clear", "stale")
    assert cleared and cleared[0]["deviceId"] == session.device_id, session.describe()
    closes = session.kind("close", "stale")
    assert closes and closes[0]["code"] == 1008, session.describe()
    # No other phase failed.
    assert [line["phase"] for line in session.kind("connect-error")] == ["stale"] * len(
        session.kind("connect-error")), session.describe()


def test_gateway_lists_the_paired_device(session):
    assert session.returncode == 0, session.describe()
    proc = subprocess.run(
        [sys.executable, "-m", "krabfast", "devices", "list", "--json", "--url",
         session.gateway.url, "--token", TOKEN],
        cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    row = next((d for d in listed["paired"] if d["deviceId"] == session.device_id), None)
    assert row is not None, listed
    assert row["publicKey"] == session.one("identity")["publicKey"]
    assert row["approvedVia"] == "silent" and row["clientId"] == "cli" and row["clientMode"] == "cli"
    assert row["roles"] == ["operator"] and row["scopes"] == ["operator.read"]
    assert listed["pending"] == []
