"""The reference CLI (`openclaw gateway call ...`, Node 24) against krabfast.

Each call runs `node openclaw.mjs gateway call METHOD --url ws://127.0.0.1:P --token T
[--json]` with HOME set to a fresh temp dir (no OpenClaw config or identity on disk).
"""

from __future__ import annotations

import json

import pytest

from .helpers import TOKEN, run_node

pytestmark = pytest.mark.interop


class Cli:
    def __init__(self, reference, gateway, home) -> None:
        self.reference = reference
        self.gateway = gateway
        self.home = home

    def __call__(self, method: str, *extra: str, params: dict | None = None, json_out: bool = True,
                 token: str = TOKEN):
        args = [str(self.reference.openclaw_mjs), "gateway", "call", method,
                "--url", self.gateway.url, "--token", token]
        if params is not None:
            args += ["--params", json.dumps(params)]
        if json_out:
            args.append("--json")
        proc = run_node(self.reference, [*args, *extra], cwd=self.home, home=self.home, timeout=60)
        proc.describe = (f"$ openclaw {' '.join(args[1:])}\nexit {proc.returncode}\n--- stdout\n"
                         f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}\n"
                         f"--- gateway log\n{self.gateway.output()[-2000:]}")
        return proc

    def ok_json(self, method: str, **kw):
        proc = self(method, **kw)
        assert proc.returncode == 0, proc.describe
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"--json output is not JSON\n{proc.describe}") from None


@pytest.fixture(scope="module")
def shared_cli(reference, gateway_server_module, tmp_path_factory):
    """One gateway for the stateless calls."""
    gw = gateway_server_module("--token", TOKEN)
    return Cli(reference, gw, tmp_path_factory.mktemp("clihome"))


@pytest.fixture
def cli(reference, gateway_server, tmp_path):
    """A fresh gateway for calls that change state."""
    gw = gateway_server("--token", TOKEN)
    home = tmp_path / "home"
    home.mkdir()
    return Cli(reference, gw, home)


def test_health(shared_cli, ref_schema):
    health = shared_cli.ok_json("health")
    assert isinstance(health, dict)
    assert health["ok"] is True
    assert isinstance(health["ts"], int)
    # health has no definition of its own; it is the `health` of a hello-ok Snapshot.
    snapshot = {"presence": [], "health": health, "stateVersion": {"presence": 0, "health": 0},
                "uptimeMs": 0}
    assert ref_schema("Snapshot", snapshot) == []


def test_status(shared_cli):
    status = shared_cli.ok_json("status")
    assert isinstance(status, dict) and status


def _status_cli(shared_cli, *extra: str):
    """`openclaw status` reads the gateway from OPENCLAW_GATEWAY_URL/TOKEN, and only once a
    config file exists (an empty one will do)."""
    home = shared_cli.home / "status-home"
    (home / ".openclaw").mkdir(parents=True, exist_ok=True)
    (home / ".openclaw" / "openclaw.json").write_text("{}")
    env = {"OPENCLAW_GATEWAY_URL": shared_cli.gateway.url, "OPENCLAW_GATEWAY_TOKEN": TOKEN}
    proc = run_node(shared_cli.reference, [str(shared_cli.reference.openclaw_mjs), "status", *extra],
                    cwd=home, home=home, timeout=90, env=env)
    describe = (f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n"
                f"{proc.stderr[-3000:]}")
    return proc, describe


def test_reference_status_command(shared_cli):
    # It reads sessions.byAgent[] and cliProjection from `status` (it crashed without them).
    proc, describe = _status_cli(shared_cli, "--json")
    assert proc.returncode == 0, describe
    out = json.loads(proc.stdout)
    assert out["gateway"]["reachable"] is True, describe
    assert [a["id"] for a in out["agents"]["agents"]] == ["main"]
    proc, describe = _status_cli(shared_cli)
    assert proc.returncode == 0, describe
    assert "reachable" in proc.stdout, describe


def test_system_presence(shared_cli, ref_schema):
    presence = shared_cli.ok_json("system-presence")
    assert isinstance(presence, list)
    for entry in presence:
        assert ref_schema("PresenceEntry", entry) == []
    # The CLI is an ephemeral client: it never shows up in presence itself.
    assert not [e for e in presence if e.get("mode") == "cli"]


def test_human_output(shared_cli):
    proc = shared_cli("health", json_out=False)
    assert proc.returncode == 0, proc.describe
    assert "health" in proc.stdout, proc.describe


def test_system_event_then_presence(cli, ref_schema):
    assert cli.ok_json("system-event", params={"text": "hi"}) == {"ok": True}
    presence = cli.ok_json("system-presence")
    for entry in presence:
        assert ref_schema("PresenceEntry", entry) == []
    assert [e for e in presence if e.get("text") == "hi"], presence


def test_presence_lists_newest_first(cli):
    for text in ("first event", "second event"):
        assert cli.ok_json("system-event", params={"text": text}) == {"ok": True}
    texts = [e.get("text") for e in cli.ok_json("system-presence")]
    assert texts.index("second event") < texts.index("first event"), texts


def test_wrong_token_is_rejected(shared_cli):
    proc = shared_cli("health", token="wrong-" + TOKEN)
    assert proc.returncode == 1, proc.describe
    out = json.loads(proc.stdout)
    assert out["ok"] is False
    assert out["error"]["code"] == "INVALID_REQUEST"
    assert out["error"]["details"]["code"] == "AUTH_TOKEN_MISMATCH"
    assert "token mismatch" in proc.stderr, proc.describe


def test_unknown_method_is_rejected(shared_cli):
    proc = shared_cli("krabfast.interop.no-such-method")
    assert proc.returncode == 1, proc.describe
    out = json.loads(proc.stdout)
    assert out["ok"] is False
    assert out["error"]["code"] == "INVALID_REQUEST"
    assert "unknown method" in out["error"]["message"]
