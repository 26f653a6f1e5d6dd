"""The reference client library (@openclaw/gateway-client `GatewayClient`) against krabfast.

gateway_client_driver.mjs is copied into a temp dir and run with Node 24; it imports the
client by file URL from the reference install, connects with a shared token only
(`deviceIdentity: null`: the package never loads a device identity by itself, its default
`hostDeps.loadOrCreateDeviceIdentity` returns undefined), and prints JSON lines.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .helpers import TOKEN, json_lines, run_node

pytestmark = pytest.mark.interop

DRIVER = Path(__file__).with_name("gateway_client_driver.mjs")
TEXT = "krabfast interop: system-event from GatewayClient"


class Run:
    def __init__(self, proc, gateway) -> None:
        self.returncode = proc.returncode
        self.stderr = proc.stderr
        self.lines = json_lines(proc.stdout)
        self.gateway = gateway

    def kind(self, kind: str) -> list[dict]:
        return [line for line in self.lines if line["kind"] == kind]

    def events(self, name: str | None = None) -> list[dict]:
        return [line["frame"] for line in self.kind("event")
                if name is None or line["frame"]["event"] == name]

    def result(self, method: str) -> dict:
        for line in self.kind("result"):
            if line["method"] == method:
                return line
        raise AssertionError(f"no result for {method}: {self.describe()}")

    def before_done(self) -> list[dict]:
        out = []
        for line in self.lines:
            if line["kind"] == "done":
                break
            out.append(line)
        return out

    def describe(self) -> str:
        lines = "\n".join(str(line)[:400] for line in self.lines)
        return (f"exit {self.returncode}\n--- stdout (json lines)\n{lines}\n--- stderr\n"
                f"{self.stderr[-3000:]}\n--- gateway log\n{self.gateway.output()[-3000:]}")


def _drive(reference, factory, tmp: Path, scenario: str, token: str,
           client_options: dict | None = None) -> Run:
    gw = factory("--token", TOKEN, "--tick-interval-ms", "500")
    script = tmp / "gateway_client_driver.mjs"
    shutil.copyfile(DRIVER, script)
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {"DRIVER_CLIENT_OPTIONS": json.dumps(client_options)} if client_options else None
    proc = run_node(reference, [str(script), str(reference.gateway_client_entry), gw.url, token,
                                scenario, TEXT], cwd=tmp, home=home, timeout=60, env=env)
    return Run(proc, gw)


@pytest.fixture(scope="module")
def session(reference, gateway_server_module, tmp_path_factory) -> Run:
    return _drive(reference, gateway_server_module, tmp_path_factory.mktemp("gwclient"),
                  "session", TOKEN)


def test_session_completes(session):
    assert session.returncode == 0, session.describe()
    assert session.kind("done"), session.describe()
    assert not session.kind("connect-error"), session.describe()
    early_closes = [line for line in session.before_done() if line["kind"] == "close"]
    assert not early_closes, session.describe()
    assert not [line for line in session.before_done() if line["kind"] == "gap"], session.describe()


def test_hello_ok(session, ref_schema):
    hellos = session.kind("hello")
    assert len(hellos) == 1, session.describe()
    hello = hellos[0]["hello"]
    assert ref_schema("HelloOk", hello) == []
    assert hello["protocol"] == 4
    assert hello["policy"]["tickIntervalMs"] == 500
    assert hello["auth"]["role"] == "operator"
    assert set(hello["auth"]["scopes"]) >= {"operator.read", "operator.admin"}
    assert {"health", "status", "system-presence", "system-event"} <= set(hello["features"]["methods"])
    assert {"tick", "presence"} <= set(hello["features"]["events"])


def test_requests(session, ref_schema):
    health = session.result("health")
    assert health["ok"], session.describe()
    assert isinstance(health["payload"], dict) and health["payload"].get("ok") is True

    presence = session.result("system-presence")
    assert presence["ok"], session.describe()
    assert isinstance(presence["payload"], list)
    for entry in presence["payload"]:
        assert ref_schema("PresenceEntry", entry) == []

    event = session.result("system-event")
    assert event["ok"], session.describe()
    assert event["payload"] == {"ok": True}

    unknown = session.result("krabfast.interop.no-such-method")
    assert not unknown["ok"]
    assert unknown["error"]["name"] == "GatewayClientRequestError"
    assert unknown["error"]["code"] == "INVALID_REQUEST"
    assert "unknown method" in unknown["error"]["message"]


def test_events_are_schema_valid_and_sequenced(session, ref_schema):
    events = session.events()
    assert events, session.describe()
    for frame in events:
        assert ref_schema("EventFrame", frame) == []
    seqs = [frame["seq"] for frame in events if "seq" in frame]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert not session.kind("gap")


def test_ticks_keep_the_watchdog_quiet(session, ref_schema):
    ticks = session.events("tick")
    assert len(ticks) >= 3, session.describe()
    for frame in ticks:
        assert ref_schema("TickEvent", frame["payload"]) == []
    stamps = [frame["payload"]["ts"] for frame in ticks]
    assert stamps == sorted(stamps)
    # The client closes with 4000 "tick timeout" after 2 x tickIntervalMs of silence.
    assert not [line for line in session.lines if line["kind"] == "close" and line["code"] == 4000]


def test_system_event_broadcasts_presence(session, ref_schema):
    hello = session.kind("hello")[0]["hello"]
    with_text = [frame for frame in session.events("presence")
                 if any(e.get("text") == TEXT for e in frame["payload"]["presence"])]
    assert with_text, session.describe()
    frame = with_text[0]
    for entry in frame["payload"]["presence"]:
        assert ref_schema("PresenceEntry", entry) == []
    assert frame["stateVersion"]["presence"] > hello["snapshot"]["stateVersion"]["presence"]


def test_backend_client_is_not_listed_in_presence(session):
    # The reference treats cli/backend/probe clients as ephemeral (no presence row).
    def ours(entries):
        return [e for e in entries if e.get("instanceId") == "krabfast-interop" or e.get("mode") == "backend"]

    assert ours(session.result("system-presence")["payload"]) == []
    for frame in session.events("presence"):
        assert ours(frame["payload"]["presence"]) == []


def test_stop_closes_cleanly(session):
    after = session.lines[session.lines.index({"kind": "done"}):]
    errors = [line for line in after if line["kind"] == "log" and "invalid status code" in
              line["message"].lower()]
    assert errors == []
    closes = [line["code"] for line in after if line["kind"] == "close"]
    assert closes and closes[0] in (1000, 1005), after


def test_wrong_token_pauses_reconnect(reference, gateway_server, tmp_path):
    run = _drive(reference, gateway_server, tmp_path, "bad-token", "wrong-" + TOKEN)
    assert run.returncode == 0, run.describe()
    assert not run.kind("hello")
    errors = run.kind("connect-error")
    assert errors, run.describe()
    error = errors[0]["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert error["details"]["code"] == "AUTH_TOKEN_MISMATCH"
    paused = run.kind("reconnect-paused")
    assert paused and paused[0]["detailCode"] == "AUTH_TOKEN_MISMATCH", run.describe()
    assert paused[0]["code"] == 1008


def _reads(reference, gateway_server, tmp_path, **client_options) -> Run:
    run = _drive(reference, gateway_server, tmp_path, "reads", TOKEN, client_options)
    assert run.returncode == 0 and run.kind("done"), run.describe()
    return run


def _assert_missing_read_scope(result: dict) -> None:
    assert not result["ok"], result
    assert result["error"]["code"] == "FORBIDDEN"
    assert result["error"]["details"] == {"code": "MISSING_SCOPE", "missingScope": "operator.read",
                                          "requiredScopes": ["operator.read"]}


def test_local_backend_client_keeps_requested_scopes(reference, gateway_server, tmp_path):
    run = _reads(reference, gateway_server, tmp_path, clientName="gateway-client", mode="backend",
                 scopes=["operator.read"])
    assert run.kind("hello")[0]["hello"]["auth"]["scopes"] == ["operator.read"]
    assert run.result("health")["ok"] and run.result("system-presence")["ok"]


def test_health_needs_no_scope(reference, gateway_server, tmp_path):
    run = _reads(reference, gateway_server, tmp_path, clientName="cli", mode="cli", scopes=[])
    assert run.kind("hello")[0]["hello"]["auth"]["scopes"] == []
    _assert_missing_read_scope(run.result("system-presence"))
    assert run.result("health")["ok"], run.describe()


def test_probe_client_without_device_gets_no_scopes(reference, gateway_server, tmp_path):
    run = _reads(reference, gateway_server, tmp_path, clientName="cli", mode="probe",
                 scopes=["operator.read"])
    assert run.kind("hello")[0]["hello"]["auth"]["scopes"] == []
    assert run.result("health")["ok"], run.describe()
    _assert_missing_read_scope(run.result("system-presence"))
