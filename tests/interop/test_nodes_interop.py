"""Nodes across implementations: the reference node host on krabfast, krabfast's node host on
the reference gateway, and the node.invoke relay's edge cases run against both gateways.

- `openclaw node run --host 127.0.0.1 --port P` (Node 24, `OPENCLAW_GATEWAY_TOKEN`, a fresh
  HOME) connects to a krabfast gateway, is approved with `krabfast nodes approve`, and
  answers `system.which` / `file.stat` invoked through krabfast.
- `python -m krabfast node run` connects to `openclaw gateway run --allow-unconfigured --bind
  loopback --auth token` (fresh HOME; ready after ~6-10 s), is approved there by an admin
  (gateway-client/backend with the shared token keeps its scopes on the reference too), and
  answers `system.which` invoked through the reference's node.invoke.
- The same raw-node scenario (wrong-node/late results, timeouts, node errors, disconnects,
  write-scope invokes) runs against both gateways; the reference run proves the
  expectations, the krabfast run is compared with them.

One reference gateway serves the whole module.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from krabfast.bench.targets import stop_process_tree
from tests.conftest import free_port
from tests.devicekeys import DeviceKey
from tests.integration.helpers import TOKEN, run
from tests.integration.node_helpers import (
    PAIRING_CHANGED,
    NOT_CONNECTED,
    NodeHosts,
    admin_ws,
    answer,
    approve,
    approved_raw_node,
    assert_result,
    invoke,
    invoke_params,
    node_failure,
    node_row,
    nodes_cli,
    raw_node,
    requested,
    wait_row,
)

pytestmark = [pytest.mark.interop, pytest.mark.slow]

NODE_ENV = {"NO_COLOR": "1", "FORCE_COLOR": "0", "CI": "true"}


# -- processes ---------------------------------------------------------------------------------

class ReferenceProcess:
    """`node openclaw.mjs <args>` in its own session, output to a log file."""

    def __init__(self, reference, args: list[str], home: Path, log: Path,
                 env: dict[str, str] | None = None) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home, self.log = home, log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [str(reference.node), str(reference.openclaw_mjs), *args], cwd=home,
                env=reference.env(HOME=str(home), **NODE_ENV, **(env or {})),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_process_tree(self.process)


class ReferenceGateway(ReferenceProcess):
    def __init__(self, reference, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        super().__init__(reference, ["gateway", "run", "--allow-unconfigured", "--bind", "loopback",
                                     "--port", str(self.port), "--auth", "token", "--token", TOKEN],
                         tmp / "refgw-home", tmp / "refgw.log")

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until an operator handshake and a health call succeed (it listens before it answers)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = "not started"
        while loop.time() < deadline:
            assert self.process.poll() is None, f"reference gateway exited:\n{self.output()[-3000:]}"
            try:
                ws = await admin_ws(self.url)
                res = await ws.call("health", {}, timeout=10)
                await ws.close()
                if res["ok"]:
                    return
                last = str(res)
            except (OSError, AssertionError, asyncio.TimeoutError) as exc:
                last = repr(exc)
            await asyncio.sleep(0.25)
        raise AssertionError(f"reference gateway not ready after {timeout}s ({last}):\n"
                             f"{self.output()[-3000:]}")


@pytest.fixture(scope="module")
def ref_gateway(reference, tmp_path_factory):
    gw = ReferenceGateway(reference, tmp_path_factory.mktemp("refgw"))
    try:
        run(gw.wait_ready(), timeout=70)
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def node_host(tmp_path):
    hosts = NodeHosts(tmp_path)
    yield hosts
    hosts.stop_all()


# -- (a) the reference node host on krabfast --------------------------------------------------

def test_reference_node_host_on_krabfast(reference, gateway_server, tmp_path):
    gw = gateway_server("--token", TOKEN)
    target = tmp_path / "data.txt"
    target.write_text("hello")
    home = tmp_path / "nodehome"
    sh = os.path.abspath(shutil.which("sh"))
    node = None

    async def body():
        nonlocal node
        admin = await admin_ws(gw.url)
        node = ReferenceProcess(reference, ["node", "run", "--host", "127.0.0.1",
                                            "--port", str(gw.port)],
                                home, tmp_path / "refnode.log",
                                env={"OPENCLAW_GATEWAY_TOKEN": TOKEN})
        try:
            event = await admin.event("node.pair.requested", 45)
        except (AssertionError, asyncio.TimeoutError):
            raise AssertionError(f"no node.pair.requested from the reference node host:\n"
                                 f"{node.output()[-3000:]}\n--- gateway\n{gw.output()[-2000:]}")
        req = event["payload"]
        node_id = req["nodeId"]
        assert "system.which" in req["commands"] and "file.stat" in req["commands"], req
        assert req["requiredApproveScopes"] == ["operator.pairing", "operator.admin"], req
        assert req["platform"] == "linux" and req["version"] == reference_version(reference), req

        # Its identity lives in ~/.openclaw/state/openclaw.sqlite (node-facts 7).
        db = home / ".openclaw" / "state" / "openclaw.sqlite"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            ids = [r[0] for r in conn.execute("SELECT device_id FROM device_identities")]
        assert node_id in ids, (node_id, ids)

        code, out, err = await nodes_cli(gw.url, "approve", req["requestId"])
        assert code == 0, (out, err, gw.output()[-2000:])

        which = assert_result(await invoke(admin, node_id, "system.which", {"bins": ["sh"]},
                                           timeout=30), node_id, "system.which")
        assert which == {"bins": {"sh": sh}}, which
        code, out, err = await nodes_cli(gw.url, "invoke", "--node", node_id, "--command",
                                         "system.which", "--params",
                                         '{"bins":["sh","no-such-binary-krab"]}')
        assert code == 0, (out, err)
        assert json.loads(out)["payload"] == {"bins": {"sh": sh}}, out

        # file.stat as the reference node host answers it: binding {kind, device, inode}.
        stat = assert_result(await invoke(admin, node_id, "file.stat", {"path": str(target)},
                                          timeout=30), node_id, "file.stat")
        info = os.stat(target)
        assert stat["ok"] is True and stat["path"] == os.path.realpath(target), stat
        assert stat["type"] == "file" and stat["size"] == 5, stat
        assert stat["binding"] == {"kind": "existing", "device": str(info.st_dev),
                                   "inode": str(info.st_ino)}, stat

        # node.list: connected, approved, host stats (sent as payloadJSON by the node host).
        row = await wait_row(admin, node_id, lambda r: "hostStats" in r, timeout=15)
        assert row["connected"] is True and row["approvalState"] == "approved", row
        assert "system.which" in row["commands"], row
        assert row["clientId"] == "node-host" and row["clientMode"] == "node", row
        assert row["hostStats"]["cpuCount"] >= 1, row
        await admin.close()

    try:
        run(body(), timeout=75)
    finally:
        if node is not None:
            node.stop()


def reference_version(reference) -> str:
    with open(reference.openclaw_mjs.parent / "package.json", encoding="utf-8") as fh:
        return json.load(fh)["version"]


# -- (b) krabfast's node host on the reference gateway ----------------------------------------

def test_krabfast_node_host_on_reference(ref_gateway, node_host):
    sh = os.path.abspath(shutil.which("sh"))

    async def body():
        admin = await admin_ws(ref_gateway.url)
        node = node_host(ref_gateway.port)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:  # the request, or the node host's first connect failure
            found = [e for e in admin.events("node.pair.requested")
                     if e["payload"]["nodeId"] == node.id]
            if found:
                req = found[0]["payload"]
                break
            failures = [ln for ln in node.output().splitlines() if "cannot connect" in ln]
            assert not failures, failures[0]
            assert loop.time() < deadline, node.output()
            await asyncio.sleep(0.1)
        # The reference drops file.stat (a dangerous plugin command without an allow entry).
        assert "system.which" in req["commands"], req
        assert req["requiredApproveScopes"] == ["operator.pairing", "operator.admin"], req
        await approve(admin, req["requestId"])
        # The reference may drop the node's socket on approval; under load its reconnect can
        # take a while, and an invoke before it is NOT_CONNECTED.
        await wait_row(admin, node.id, lambda r: r.get("connected") is True
                       and r.get("approvalState") == "approved", timeout=30)
        which = assert_result(await invoke(admin, node.id, "system.which", {"bins": ["sh"]},
                                           timeout=30), node.id, "system.which")
        assert which == {"bins": {"sh": sh}}, which
        row = await node_row(admin, node.id)
        assert row["connected"] is True and row["approvalState"] == "approved", row
        await admin.close()

    run(body(), timeout=75)


# -- (c) the relay's edge cases, on both gateways ---------------------------------------------

async def relay_outcomes(url: str) -> dict:
    """Raw nodes A (approved) and B (pending) on `url`; what the gateway answers."""
    admin = await admin_ws(url)
    writer = await admin_ws(url, scopes=["operator.pairing", "operator.write"])
    a_key, b_key = DeviceKey(), DeviceKey()
    a = await approved_raw_node(url, admin, a_key, ["system.which"])
    b = await raw_node(url, b_key, ["system.which"])
    await requested(admin, b_key.id)
    got: dict = {}

    def shape(res):
        return {"ok": True, "payload": res["payload"]} if res["ok"] else {"ok": False, "error": res["error"]}

    # A write-only operator invokes system.which; B answers A's invoke (as itself, then as A),
    # then A answers.
    req_id = writer.request("node.invoke", invoke_params(a_key.id, "system.which", {"bins": ["sh"]}))
    request = (await a.event("node.invoke.request", 10))["payload"]
    got["B answers as itself"] = shape(await answer(b, request, b_key.id, {"from": "b"}))
    res = await answer(b, request, a_key.id, {"from": "b"})
    got["B answers as A"] = {"ok": res["ok"], "code": res.get("error", {}).get("code")}
    got["unknown id"] = shape(await answer(a, dict(request, id="not-an-invoke"), a_key.id, {}))
    await answer(a, request, a_key.id, {"from": "a"})
    got["writer gets A's answer"] = shape(await writer.response(req_id, 10))["payload"]["payload"]
    # Timeout, the cancel, and the late answer.
    req_id = admin.request("node.invoke", invoke_params(a_key.id, "system.which", {}, timeout_ms=300))
    request = (await a.event("node.invoke.request", 10))["payload"]
    got["timeout"] = shape(await admin.response(req_id, 10))
    cancel = await a.event("node.invoke.cancel", 5)
    got["cancel"] = cancel["payload"] == {"invokeId": request["id"], "nodeId": a_key.id}
    got["late answer"] = shape(await answer(a, request, a_key.id, {}))
    # The node reports an error.
    req_id = admin.request("node.invoke", invoke_params(a_key.id, "system.which", {}))
    request = (await a.event("node.invoke.request", 10))["payload"]
    await a.call("node.invoke.result", {"id": request["id"], "nodeId": a_key.id, "ok": False,
                                        "error": {"code": "BOOM", "message": "it broke"}})
    got["node error"] = shape(await admin.response(req_id, 10))
    # A pending (never approved) node, and a node nobody knows.
    got["pending node"] = shape(await invoke(admin, b_key.id, "system.which", {"bins": ["sh"]}))
    got["unknown node"] = shape(await invoke(admin, "no-such-node", "system.which", {"bins": ["sh"]}))
    # The node drops mid-call; then it is offline.
    req_id = admin.request("node.invoke", invoke_params(a_key.id, "system.which", {}))
    await a.event("node.invoke.request", 10)
    await a.close()
    got["disconnect"] = shape(await admin.response(req_id, 10))
    await wait_row(admin, a_key.id, lambda r: r["connected"] is False)
    got["offline"] = shape(await invoke(admin, a_key.id, "system.which", {}))
    for ws in (b, writer, admin):
        await ws.close()
    return got


def fail(error):
    return {"ok": False, "error": error}


IGNORED = {"ok": True, "payload": {"ok": True, "ignored": True}}
EXPECTED = {
    "B answers as itself": IGNORED,
    "B answers as A": {"ok": False, "code": "INVALID_REQUEST"},
    "unknown id": IGNORED,
    "writer gets A's answer": {"from": "a"},
    "timeout": fail(node_failure("TIMEOUT", "node invoke timed out")),
    "cancel": True,
    "late answer": IGNORED,
    "node error": fail(node_failure("BOOM", "it broke")),
    "pending node": fail(PAIRING_CHANGED),
    "unknown node": fail(PAIRING_CHANGED),
    "disconnect": fail(node_failure("DISCONNECTED", "node disconnected (system.which)")),
    "offline": fail(NOT_CONNECTED),
}


@pytest.mark.parametrize("target", [
    "reference",
    "krabfast",
])
def test_relay_edge_cases_match_reference(target, request):
    if target == "reference":
        url = request.getfixturevalue("ref_gateway").url
    else:
        url = request.getfixturevalue("gateway_server")("--token", TOKEN).url
    got = run(relay_outcomes(url), timeout=60)
    diff = {k: {"got": got.get(k), "reference": v} for k, v in EXPECTED.items() if got.get(k) != v}
    assert not diff, json.dumps(diff, indent=1)
