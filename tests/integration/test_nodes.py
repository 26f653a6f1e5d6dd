"""Nodes against real processes: `python -m krabfast gateway` + `python -m krabfast node run`.

Each node host is a subprocess with its own `--state-dir` (device identity) in tmp_path; the
operator side is the `krabfast nodes ...` CLI (a subprocess, cli/cli with operator.admin on
the shared token) and raw admin sockets (gateway-client/backend, shared token). Test-only
node commands come from a plugin module written to tmp_path and put on PYTHONPATH:

- `demo.sleep {ms, marker?}`: touches `marker` (so the test knows it runs), sleeps, answers;
- `demo.count {file, delayMs?}`: appends a line to `file` and answers the line count, so a
  test can tell how often the command really ran.

Other nodes are raw sockets with their own Ed25519 keys (tests/devicekeys.py) when the test
must see the `node.invoke.request` ids. Helpers live in tests/integration/node_helpers.py.

Expected shapes follow the reference (openclaw 2026.9.6) as recorded in
docs/reference/node-facts.md and re-checked live by tests/interop/test_nodes_interop.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.devicekeys import DeviceKey
from tests.integration.helpers import TOKEN, run
from tests.integration.node_helpers import (
    BUILTIN,
    NOT_CONNECTED,
    NodeHostProcess,
    NodeHosts,
    PAIRING_CHANGED,
    REPO,
    RESULT_KEYS,
    WITH_PLUGIN,
    admin_ws,
    answer,
    approve,
    approved_raw_node,
    assert_error,
    assert_result,
    cli_json,
    expected_stat,
    invoke,
    invoke_params,
    node_failure,
    node_row,
    nodes_cli,
    raw_node,
    requested,
    wait_row,
)


@pytest.fixture
def node_host(tmp_path):
    hosts = NodeHosts(tmp_path)
    yield hosts
    hosts.stop_all()


@pytest.fixture(scope="module")
def node_host_module(tmp_path_factory):
    hosts = NodeHosts(tmp_path_factory.mktemp("nodes"))
    yield hosts
    hosts.stop_all()


class OwnGateway:
    """A gateway on a fixed port and state dir, so a test can stop it and start it again."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.state = tmp / "restart-gateway-state"
        self.url = f"ws://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.runs = 0

    def start(self, timeout: float = 15.0) -> None:
        self.runs += 1
        log = self.tmp / f"restart-gateway-{self.runs}.log"
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "krabfast", "gateway", "--port", str(self.port),
                 "--bind", "127.0.0.1", "--token", TOKEN, "--state-dir", str(self.state)],
                cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text()
            if "listening" in log.read_text(errors="replace"):
                return
            time.sleep(0.02)
        raise AssertionError(f"gateway not ready:\n{log.read_text()}")

    def stop(self) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def own_gateway(tmp_path):
    gw = OwnGateway(tmp_path)
    yield gw
    gw.stop()


# -- the full round trip through the CLI ---------------------------------------------------------

def test_cli_round_trip(gateway_server, node_host, tmp_path):
    gw = gateway_server("--token", TOKEN)
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 1234)

    async def body():
        admin = await admin_ws(gw.url)
        t0 = int(time.time() * 1000)
        node = node_host(gw.port)
        req = await requested(admin, node.id)
        assert req["commands"] == BUILTIN and req["caps"] == ["file", "system"], req
        assert req["requiredApproveScopes"] == ["operator.pairing", "operator.admin"], req
        request_id = req["requestId"]

        # Before approval the node is listed (pending) but nothing is invocable: the
        # reference answers UNAVAILABLE PAIRING_CHANGED (retryable) for a never-approved node.
        code, out, err = await nodes_cli(gw.url, "invoke", "--node", node.id, "--command",
                                         "system.which", "--params", '{"bins":["sh"]}')
        assert code == 1 and "UNAVAILABLE" in err and "pairing changed" in err, (code, out, err)
        res = await invoke(admin, node.id, "file.stat", {"path": str(data)})
        assert res["error"] == PAIRING_CHANGED, res
        row = await node_row(admin, node.id)
        assert row["connected"] is True and row["commands"] == [], row
        assert row["approvalState"] == "pending-approval", row
        assert row["pendingRequestId"] == request_id, row
        assert row["pendingDeclaredCommands"] == BUILTIN, row

        # `nodes pending` (human and JSON) shows the request.
        code, out, err = await nodes_cli(gw.url, "pending")
        assert code == 0, err
        assert request_id in out and "file.stat, system.which" in out, out
        assert "operator.pairing, operator.admin" in out, out
        pending = await cli_json(gw.url, "pending")
        assert [p["requestId"] for p in pending] == [request_id]
        assert pending[0]["nodeId"] == node.id and pending[0]["commands"] == BUILTIN

        # Approve through the CLI; pairing-scoped operators hear about it.
        code, out, err = await nodes_cli(gw.url, "approve", request_id)
        assert code == 0 and request_id in out, (code, out, err)
        resolved = (await admin.event("node.pair.resolved"))["payload"]
        assert resolved["requestId"] == request_id and resolved["nodeId"] == node.id
        assert resolved["decision"] == "approved"
        assert await cli_json(gw.url, "pending") == []
        code, out, err = await nodes_cli(gw.url, "approve", request_id)  # already resolved
        assert code == 1 and "INVALID_REQUEST" in err and "unknown requestId" in err, (out, err)

        # `nodes list`: connected, approved surface, last-seen and host stats.
        listed = await cli_json(gw.url, "list")
        assert isinstance(listed["ts"], int)
        row = next(n for n in listed["nodes"] if n["nodeId"] == node.id)
        assert row["connected"] is True and row["paired"] is True, row
        assert row["approvalState"] == "approved" and "pendingRequestId" not in row, row
        assert row["commands"] == BUILTIN and row["caps"] == ["file", "system"], row
        assert row["clientId"] == "node-host" and row["clientMode"] == "node", row
        assert row["platform"] == sys.platform and row["displayName"], row
        assert row["lastSeenReason"] == "connect", row
        assert t0 <= row["lastSeenAtMs"] <= int(time.time() * 1000) + 1, row
        stats = row.get("hostStats")
        if stats is None:  # reported right after connect; give it a moment
            stats = (await wait_row(admin, node.id, lambda r: "hostStats" in r))["hostStats"]
        assert stats["cpuCount"] >= 1 and isinstance(stats["updatedAtMs"], int), stats
        assert stats["memoryTotalBytes"] > 0, stats
        code, out, err = await nodes_cli(gw.url, "list")
        assert code == 0, err
        line = next(ln for ln in out.splitlines() if ln.startswith(node.id))
        assert " connected " in line and "file.stat, system.which" in line, line

        # Invoke through the CLI.
        code, out, err = await nodes_cli(gw.url, "invoke", "--node", node.id, "--command",
                                         "system.which", "--params",
                                         '{"bins":["sh","no-such-binary-krab"]}')
        assert code == 0, (out, err)
        body = json.loads(out)
        assert set(body) == RESULT_KEYS and body["ok"] is True, body
        assert body["nodeId"] == node.id and body["command"] == "system.which"
        assert body["payload"] == {"bins": {"sh": os.path.abspath(shutil.which("sh"))}}, body
        assert json.loads(body["payloadJSON"]) == body["payload"]
        code, out, err = await nodes_cli(gw.url, "invoke", "--node", node.id, "--command",
                                         "file.stat", "--params", json.dumps({"path": str(data)}))
        assert code == 0, (out, err)
        stat = json.loads(out)["payload"]
        assert {k: stat[k] for k in ("ok", "path", "type", "size")} == expected_stat(data), stat
        assert abs(stat["mtimeMs"] - os.stat(data).st_mtime_ns / 1e6) < 1, stat
        assert stat["binding"]["kind"] == "existing", stat

        # ... and through an admin socket.
        which = assert_result(await invoke(admin, node.id, "system.which", {"bins": ["sh"]}),
                              node.id, "system.which")
        assert which == {"bins": {"sh": os.path.abspath(shutil.which("sh"))}}
        stat = assert_result(await invoke(admin, node.id, "file.stat", {"path": str(tmp_path)}),
                             node.id, "file.stat")
        assert {k: stat[k] for k in ("ok", "path", "type")} == \
            {"ok": True, "path": os.path.realpath(tmp_path), "type": "directory"}, stat
        missing = assert_result(await invoke(admin, node.id, "file.stat",
                                             {"path": str(tmp_path / "nope")}),
                                node.id, "file.stat")
        assert missing == {"ok": False, "code": "NOT_FOUND", "message": "path not found"}, missing
        # A command's own failure (bad params) comes back as the node's error.
        err = assert_error(await invoke(admin, node.id, "system.which", {}), "UNAVAILABLE")
        assert err["details"]["nodeError"]["code"] == "INVALID_REQUEST", err
        assert err["details"]["nodeCommandDispatched"] is True, err
        # A command the node never declared.
        err = assert_error(await invoke(admin, node.id, "system.run", {"command": ["true"]}),
                           "INVALID_REQUEST")
        assert err["details"] == {"reason": "command not declared by node",
                                  "command": "system.run"}, err
        # An unknown node: an error through the socket (the reference answers PAIRING_CHANGED;
        # see test_unknown_node_like_reference), and the CLI says the node is unknown.
        res = await invoke(admin, "no-such-node", "system.which", {"bins": ["sh"]})
        assert res["ok"] is False and res["error"]["code"] in ("INVALID_REQUEST", "UNAVAILABLE"), res
        code, out, err = await nodes_cli(gw.url, "invoke", "--node", "no-such-node",
                                         "--command", "system.which")
        assert code == 1 and "unknown node 'no-such-node'" in err, (out, err)
        await admin.close()

    run(body(), timeout=35)
    assert "Traceback" not in node_host.started[0].output()


def test_denied_command(gateway_server, node_host, tmp_path):
    """--node-commands-deny keeps a command out of the surface and out of reach."""
    gw = gateway_server("--token", TOKEN, "--node-commands-deny", "file.stat")

    async def body():
        admin = await admin_ws(gw.url)
        node = node_host(gw.port)
        req = await requested(admin, node.id)
        assert req["commands"] == ["system.which"], req  # file.stat is never offered
        approved = await approve(admin, req["requestId"])
        assert approved["node"]["commands"] == ["system.which"], approved
        row = await node_row(admin, node.id)
        assert row["commands"] == ["system.which"], row
        err = assert_error(await invoke(admin, node.id, "file.stat", {"path": str(tmp_path)}),
                           "INVALID_REQUEST", "node command not allowed", "file.stat")
        assert err["details"]["command"] == "file.stat", err
        code, out, err = await nodes_cli(gw.url, "invoke", "--node", node.id, "--command",
                                         "file.stat", "--params", json.dumps({"path": "/"}))
        assert code == 1 and "INVALID_REQUEST" in err and "not allowed" in err, (out, err)
        assert_result(await invoke(admin, node.id, "system.which", {"bins": ["sh"]}),
                      node.id, "system.which")
        await admin.close()

    run(body(), timeout=20)


def test_denied_command_reason_like_reference(gateway_server):
    gw = gateway_server("--token", TOKEN, "--node-commands-deny", "demo.denied")

    async def body():
        admin = await admin_ws(gw.url)
        key = DeviceKey()
        node = await approved_raw_node(gw.url, admin, key, ["demo.denied", "demo.echo"])
        err = assert_error(await invoke(admin, key.id, "demo.denied", {}), "INVALID_REQUEST")
        for ws in (node, admin):
            await ws.close()
        assert err["details"] == {"reason": "command not allowlisted",
                                  "command": "demo.denied"}, err

    run(body(), timeout=15)


def test_unknown_node_like_reference(plugged):
    gw, _ = plugged

    async def body():
        admin = await admin_ws(gw.url)
        res = await invoke(admin, "no-such-node", "system.which", {"bins": ["sh"]})
        await admin.close()
        assert res["error"] == PAIRING_CHANGED, res

    run(body(), timeout=10)


# -- one gateway and one approved node host (with the plugin) for the relay's edge cases ---------

@pytest.fixture(scope="module")
def plugged(gateway_server_module, node_host_module):
    """(gateway, node host with demo.sleep/demo.count), the node's whole surface approved."""
    gw = gateway_server_module("--token", TOKEN)

    async def setup():
        admin = await admin_ws(gw.url)
        node = node_host_module(gw.port, plugin=True, name="plugged")
        req = await requested(admin, node.id)
        assert req["commands"] == WITH_PLUGIN, req
        await approve(admin, req["requestId"])
        await admin.close()
        return node

    return gw, run(setup(), timeout=15)


async def _approved_plugin_node(gw, node_host_module, name: str) -> NodeHostProcess:
    admin = await admin_ws(gw.url)
    node = node_host_module(gw.port, plugin=True, name=name)
    await approve(admin, (await requested(admin, node.id))["requestId"])
    await admin.close()
    return node


def test_plugin_command_and_timeout(plugged):
    gw, node = plugged

    async def body():
        admin = await admin_ws(gw.url)
        assert assert_result(await invoke(admin, node.id, "demo.sleep", {"ms": 10}),
                             node.id, "demo.sleep") == {"slept": 10}
        started = time.monotonic()
        err = assert_error(await invoke(admin, node.id, "demo.sleep", {"ms": 5000},
                                        timeout_ms=300), "UNAVAILABLE", "timed out")
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 2.5, elapsed
        assert err == node_failure("TIMEOUT", "node invoke timed out"), err
        # The node is still fine afterwards.
        assert_result(await invoke(admin, node.id, "system.which", {"bins": ["sh"]}),
                      node.id, "system.which")
        await admin.close()

    run(body(), timeout=15)


def test_idempotent_retry_runs_the_command_once(plugged, tmp_path):
    gw, node = plugged
    counter = tmp_path / "count.txt"

    async def body():
        inst = uuid.uuid4().hex
        admin = await admin_ws(gw.url, instance_id=inst)
        first = await invoke(admin, node.id, "demo.count", {"file": str(counter)}, key="idem-a")
        assert assert_result(first, node.id, "demo.count") == {"count": 1}
        again = await invoke(admin, node.id, "demo.count", {"file": str(counter)}, key="idem-a")
        assert again["payload"] == first["payload"], again
        assert counter.read_text().splitlines() == ["ran"]
        # The same client retrying on a second socket while the first call is still running
        # gets the same result.
        other = await admin_ws(gw.url, instance_id=inst)
        params = invoke_params(node.id, "demo.count", {"file": str(counter), "delayMs": 400},
                               key="idem-b")
        ids = admin.request("node.invoke", params), other.request("node.invoke", params)
        a = await admin.response(ids[0], 10)
        b = await other.response(ids[1], 10)
        assert assert_result(a, node.id, "demo.count") == {"count": 2}
        assert b["payload"] == a["payload"], (a, b)
        # A new key runs it again, and so does another caller reusing a key (the key is
        # per caller and params, unlike a gateway-wide one).
        third = await invoke(admin, node.id, "demo.count", {"file": str(counter)}, key="idem-c")
        assert assert_result(third, node.id, "demo.count") == {"count": 3}
        stranger = await admin_ws(gw.url)
        fourth = await invoke(stranger, node.id, "demo.count", {"file": str(counter)}, key="idem-c")
        assert assert_result(fourth, node.id, "demo.count") == {"count": 4}
        await stranger.close()
        assert counter.read_text().splitlines() == ["ran"] * 4
        await other.close()
        await admin.close()

    run(body(), timeout=20)


def test_node_killed_mid_call(plugged, node_host_module, tmp_path):
    """SIGKILL the node host while it runs a command: the caller gets UNAVAILABLE at once."""
    gw, _ = plugged
    marker = tmp_path / "started"

    async def body():
        node = await _approved_plugin_node(gw, node_host_module, "victim")
        admin = await admin_ws(gw.url)
        req_id = admin.request("node.invoke", invoke_params(
            node.id, "demo.sleep", {"ms": 20_000, "marker": str(marker)}, timeout_ms=30_000))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not marker.exists():
            assert loop.time() < deadline, node.output()
            await asyncio.sleep(0.02)
        killed_at = time.monotonic()
        node.signal(signal.SIGKILL)
        err = assert_error(await admin.response(req_id, 10), "UNAVAILABLE", "disconnected")
        assert time.monotonic() - killed_at < 3
        assert err == node_failure("DISCONNECTED", "node disconnected (demo.sleep)"), err
        row = await wait_row(admin, node.id, lambda r: r["connected"] is False)
        assert row["lastSeenReason"] == "disconnect" and row["paired"] is True, row
        assert row["approvalState"] == "approved", row
        assert row["commands"] == WITH_PLUGIN, row  # still approved, just offline
        await admin.close()

    run(body(), timeout=25)


def test_offline_node_is_not_connected(plugged):
    gw, _ = plugged

    async def body():
        admin = await admin_ws(gw.url)
        key = DeviceKey()
        node = await approved_raw_node(gw.url, admin, key, ["demo.echo"])
        await node.close()
        await wait_row(admin, key.id, lambda r: r["connected"] is False)
        res = await invoke(admin, key.id, "demo.echo", {})
        await admin.close()
        assert res["error"] == NOT_CONNECTED, res

    run(body(), timeout=15)


def test_result_from_the_wrong_node(plugged):
    """Only the invoked node's own socket may answer an invoke."""
    gw, _ = plugged

    async def body():
        admin = await admin_ws(gw.url)
        a_key, b_key = DeviceKey(), DeviceKey()
        a = await approved_raw_node(gw.url, admin, a_key, ["demo.echo"])
        b = await raw_node(gw.url, b_key, ["demo.echo"])
        req_id = admin.request("node.invoke", invoke_params(a_key.id, "demo.echo", {"x": 1}))
        request = (await a.event("node.invoke.request"))["payload"]
        assert request["nodeId"] == a_key.id and request["command"] == "demo.echo"
        assert json.loads(request["paramsJSON"]) == {"x": 1}
        assert b.events("node.invoke.request") == []
        # B answers A's invoke pretending to be A: refused.
        assert_error(await answer(b, request, a_key.id, {"from": "b"}), "INVALID_REQUEST")
        # B answers A's invoke as itself: refused or ignored (the reference says
        # {ok:true, ignored:true}; see test_stray_results_are_ignored), never delivered.
        res = await answer(b, request, b_key.id, {"from": "b"})
        assert (res["ok"] is False and res["error"]["code"] == "INVALID_REQUEST") or \
            (res["ok"] is True and res["payload"].get("ignored") is True), res
        # The caller still waits for A, and gets A's answer.
        ok = await answer(a, request, a_key.id, {"from": "a"})
        assert ok["ok"] is True and ok["payload"]["ok"] is True, ok
        assert assert_result(await admin.response(req_id, 5), a_key.id, "demo.echo") == {"from": "a"}
        for ws in (a, b, admin):
            await ws.close()

    run(body(), timeout=20)


def test_approving_host_commands_needs_admin(plugged):
    """A pairing+write operator cannot approve a surface with system.which."""
    gw, _ = plugged

    async def body():
        admin = await admin_ws(gw.url)
        writer = await admin_ws(gw.url, scopes=["operator.pairing", "operator.write"])
        assert writer.hello["auth"]["scopes"] == ["operator.pairing", "operator.write"]
        key = DeviceKey()
        node = await raw_node(gw.url, key, ["system.which", "demo.echo"])
        req = await requested(admin, key.id)
        assert req["requiredApproveScopes"] == ["operator.pairing", "operator.admin"]
        res = await writer.call("node.pair.approve", {"requestId": req["requestId"]})
        assert_error(res, "FORBIDDEN")
        # Exactly the reference's frame (node-facts 2.4).
        assert res["error"] == {"code": "FORBIDDEN", "message": "missing scope: operator.admin",
                                "details": {"code": "MISSING_SCOPE",
                                            "missingScope": "operator.admin",
                                            "requiredScopes": ["operator.pairing",
                                                               "operator.admin"]}}, res
        assert (await node_row(admin, key.id))["commands"] == []  # nothing was approved
        # The CLI (cli/cli + operator.admin) can.
        code, out, stderr = await nodes_cli(gw.url, "approve", req["requestId"])
        assert code == 0, (out, stderr)
        assert (await node_row(admin, key.id))["commands"] == ["demo.echo", "system.which"]
        # An ordinary command needs only write to invoke.
        req_id = writer.request("node.invoke", invoke_params(key.id, "demo.echo", {}))
        request = (await node.event("node.invoke.request"))["payload"]
        await answer(node, request, key.id, {"echo": True})
        assert assert_result(await writer.response(req_id), key.id, "demo.echo") == {"echo": True}

        # A surface without host commands is approvable with pairing + write ...
        key2 = DeviceKey()
        node2 = await raw_node(gw.url, key2, ["demo.echo"])
        req2 = await requested(admin, key2.id)
        assert req2["requiredApproveScopes"] == ["operator.pairing", "operator.write"], req2
        res = await writer.call("node.pair.approve", {"requestId": req2["requestId"]})
        assert res["ok"] is True and res["payload"]["node"]["commands"] == ["demo.echo"], res
        # ... and read-only operators cannot invoke at all.
        reader = await admin_ws(gw.url, scopes=["operator.read"])
        res = await invoke(reader, key2.id, "demo.echo", {})
        assert res["error"] == {"code": "FORBIDDEN", "message": "missing scope: operator.write",
                                "details": {"code": "MISSING_SCOPE",
                                            "missingScope": "operator.write",
                                            "requiredScopes": ["operator.write"]}}, res
        assert node2.events("node.invoke.request") == []
        for ws in (node, node2, reader, writer, admin):
            await ws.close()

    run(body(), timeout=20)


# -- where krabfast differs from the reference (openclaw 2026.9.6, observed live; see
# docs/reference/node-facts.md section 4 and tests/interop/test_nodes_interop.py) ------------

def test_stray_results_are_ignored(plugged):
    gw, _ = plugged

    async def body():
        admin = await admin_ws(gw.url)
        a_key, b_key = DeviceKey(), DeviceKey()
        a = await approved_raw_node(gw.url, admin, a_key, ["demo.echo"])
        b = await raw_node(gw.url, b_key, ["demo.echo"])
        req_id = admin.request("node.invoke", invoke_params(a_key.id, "demo.echo", {},
                                                            timeout_ms=300))
        request = (await a.event("node.invoke.request"))["payload"]
        outcomes = {
            "other node, own nodeId": await answer(b, request, b_key.id, {}),
            "unknown id": await answer(a, dict(request, id="not-an-invoke"), a_key.id, {}),
        }
        assert_error(await admin.response(req_id, 5), "UNAVAILABLE", "timed out")
        outcomes["late result"] = await answer(a, request, a_key.id, {})
        for ws in (a, b, admin):
            await ws.close()
        wrong = {k: v for k, v in outcomes.items()
                 if not (v["ok"] is True and v["payload"] == {"ok": True, "ignored": True})}
        assert not wrong, wrong

    run(body(), timeout=15)


def test_invoke_scopes_like_reference(plugged):
    """Invoking needs operator.admin only for browser.proxy*, fs.listDir and terminal.upload;
    system.which (approved by an admin) is invocable with operator.write, as on the reference
    (node-facts 4.1: a write-only socket invoked system.which); approving terminal.upload
    needs admin."""
    gw, _ = plugged

    async def body():
        admin = await admin_ws(gw.url)
        writer = await admin_ws(gw.url, scopes=["operator.pairing", "operator.write"])
        problems = []
        key = DeviceKey()
        node = await raw_node(gw.url, key, ["system.which", "terminal.upload"])
        req = await requested(admin, key.id)
        if req["requiredApproveScopes"] != ["operator.pairing", "operator.admin"]:
            problems.append(("approve scopes", req["requiredApproveScopes"]))
        await approve(admin, req["requestId"])
        res = await invoke(writer, key.id, "terminal.upload", {}, timeout_ms=200)
        if res["ok"] or res["error"].get("details", {}).get("missingScope") != "operator.admin":
            problems.append(("write invoking terminal.upload", res))
        req_id = writer.request("node.invoke", invoke_params(key.id, "system.which",
                                                             {"bins": ["sh"]}))
        try:
            request = (await node.event("node.invoke.request", 2))["payload"]
            await answer(node, request, key.id, {"bins": {}})
            res = await writer.response(req_id)
            if not res["ok"]:
                problems.append(("write invoking system.which", res))
        except (AssertionError, asyncio.TimeoutError):
            problems.append(("write invoking system.which", await writer.response(req_id)))
        for ws in (node, writer, admin):
            await ws.close()
        assert not problems, problems

    run(body(), timeout=15)


def test_invoke_errors_carry_reference_details(plugged):
    """Failures carry details.nodeError + nodeCommandDispatched, which reference clients use
    to decide whether a retry is safe; policy rejections carry {reason, command}; a timed-out
    node is sent node.invoke.cancel (node-facts 4.3)."""
    gw, _ = plugged

    async def body():
        admin = await admin_ws(gw.url)
        key = DeviceKey()
        node = await approved_raw_node(gw.url, admin, key, ["system.which"])
        got: dict[str, object] = {}

        # The node reports an error.
        req_id = admin.request("node.invoke", invoke_params(key.id, "system.which", {}))
        request = (await node.event("node.invoke.request"))["payload"]
        await node.call("node.invoke.result", {"id": request["id"], "nodeId": key.id, "ok": False,
                                               "error": {"code": "BOOM", "message": "it broke"}})
        got["node error"] = (await admin.response(req_id))["error"]
        # Timeout: the node is told to cancel.
        got["timeout"] = (await invoke(admin, key.id, "system.which", {}, timeout_ms=200))["error"]
        await node.barrier()
        got["cancel sent"] = [e["payload"] for e in node.events("node.invoke.cancel")]
        # Not declared.
        got["not declared"] = (await invoke(admin, key.id, "system.run", {}))["error"]
        # Disconnect mid-call.
        req_id = admin.request("node.invoke", invoke_params(key.id, "system.which", {}))
        await node.event("node.invoke.request", pred=lambda f: f["payload"]["id"] != request["id"])
        await node.close()
        got["disconnect"] = (await admin.response(req_id))["error"]
        await admin.close()

        expected = {
            "node error": node_failure("BOOM", "it broke"),
            "timeout": node_failure("TIMEOUT", "node invoke timed out"),
            "cancel sent": [{"invokeId": "<the timed-out id>", "nodeId": key.id}],
            "not declared": {"reason": "command not declared by node", "command": "system.run"},
            "disconnect": node_failure("DISCONNECTED", "node disconnected (system.which)"),
        }
        got["not declared"] = got["not declared"].get("details")
        got["cancel sent"] = [dict(c, invokeId="<the timed-out id>") for c in got["cancel sent"]]
        diff = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
        assert not diff, json.dumps(diff, indent=1)

    run(body(), timeout=15)


def test_timeout_zero_means_no_deadline(plugged):
    """timeoutMs 0 is forwarded as 0 and means no deadline (as on the reference)."""
    gw, _ = plugged

    async def body():
        admin = await admin_ws(gw.url)
        key = DeviceKey()
        node = await approved_raw_node(gw.url, admin, key, ["demo.echo"])
        req_id = admin.request("node.invoke", invoke_params(key.id, "demo.echo", {},
                                                            timeout_ms=0))
        request = (await node.event("node.invoke.request"))["payload"]
        assert request["timeoutMs"] == 0
        await asyncio.sleep(0.3)
        await answer(node, request, key.id, {"late": False})
        res = await admin.response(req_id)
        for ws in (node, admin):
            await ws.close()
        assert assert_result(res, key.id, "demo.echo") == {"late": False}

    run(body(), timeout=15)


def test_presence_alive_trigger_is_the_last_seen_reason(plugged):
    gw, _ = plugged

    async def body():
        admin = await admin_ws(gw.url)
        key = DeviceKey()
        node = await approved_raw_node(gw.url, admin, key, ["demo.echo"])
        res = await node.call("node.event", {"event": "node.presence.alive",
                                             "payloadJSON": json.dumps({"trigger": "manual"})})
        assert res["ok"] is True and res["payload"]["handled"] is True, res
        row = await node_row(admin, key.id)
        for ws in (node, admin):
            await ws.close()
        assert row["lastSeenReason"] == "manual", row

    run(body(), timeout=15)


def test_file_stat_binding_matches_reference(plugged, tmp_path):
    gw, node = plugged
    target = tmp_path / "f.txt"
    target.write_text("hello")

    async def body():
        admin = await admin_ws(gw.url)
        stat = assert_result(await invoke(admin, node.id, "file.stat", {"path": str(target)}),
                             node.id, "file.stat")
        await admin.close()
        info = os.stat(target)
        assert stat["binding"] == {"kind": "existing", "device": str(info.st_dev),
                                   "inode": str(info.st_ino)}, stat

    run(body(), timeout=15)


# -- lifecycle: offline after stop, reconnect after a gateway restart ----------------------------

def test_reconnect_after_gateway_restart_and_offline_after_stop(own_gateway, node_host):
    gw = own_gateway
    gw.start()

    async def first_run():
        admin = await admin_ws(gw.url)
        node = node_host(gw.port)
        await approve(admin, (await requested(admin, node.id))["requestId"])
        assert_result(await invoke(admin, node.id, "system.which", {"bins": ["sh"]}),
                      node.id, "system.which")
        await admin.close()
        return node

    node = run(first_run(), timeout=15)
    gw.stop()
    gw.start()

    async def second_run():
        admin = await admin_ws(gw.url)
        # The node host notices, backs off and reconnects on its own; its surface is still
        # approved (state survived the restart), so it is invocable again without a request.
        row = await wait_row(admin, node.id, lambda r: r["connected"], timeout=12)
        assert row["paired"] is True and row["commands"] == BUILTIN, row
        assert row["lastSeenReason"] == "connect" and row["approvalState"] == "approved", row
        assert admin.events("node.pair.requested") == []
        assert_result(await invoke(admin, node.id, "system.which", {"bins": ["sh"]}),
                      node.id, "system.which")
        connected_seen = row["lastSeenAtMs"]
        # Stop the node host: listed offline with the reason, last-seen bumped.
        node.stop()
        row = await wait_row(admin, node.id, lambda r: r["connected"] is False)
        assert row["lastSeenReason"] == "disconnect" and row["lastSeenAtMs"] >= connected_seen, row
        assert row["paired"] is True and row["commands"] == BUILTIN, row
        code, out, err = await nodes_cli(gw.url, "list")
        assert code == 0 and "offline (disconnect)" in out, (out, err)
        await admin.close()

    run(second_run(), timeout=25)
    assert "reconnecting" in node.output() or "cannot connect" in node.output(), node.output()
