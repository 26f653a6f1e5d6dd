"""Node helpers shared by tests/integration/test_nodes.py and
tests/interop/test_nodes_interop.py: `krabfast node run` subprocesses (with an optional test
plugin), raw node sockets, admin sockets, the `krabfast nodes` CLI, and the reference's
node.invoke error shapes (docs/reference/node-facts.md section 4)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.devicekeys import DeviceKey
from tests.integration.helpers import TOKEN, RawWS, connect_params

REPO = Path(__file__).resolve().parents[2]
ADMIN_SCOPES = ["operator.admin", "operator.pairing", "operator.read", "operator.write"]
PLUGIN = "krab_nodes_test_plugin"
PLUGIN_SOURCE = '''
import asyncio


def register(registry):
    @registry.command("demo.sleep", cap="demo")
    async def sleep(params):
        marker = params.get("marker")
        if marker:
            with open(marker, "w") as fh:
                fh.write("started")
        await asyncio.sleep(params.get("ms", 1000) / 1000)
        return {"slept": params.get("ms", 1000)}

    @registry.command("demo.count", cap="demo")
    async def count(params):
        await asyncio.sleep(params.get("delayMs", 0) / 1000)
        with open(params["file"], "a") as fh:
            fh.write("ran\\n")
        with open(params["file"]) as fh:
            return {"count": len(fh.read().splitlines())}
'''
BUILTIN = ["file.stat", "system.which"]
WITH_PLUGIN = ["demo.count", "demo.sleep", "file.stat", "system.which"]
RESULT_KEYS = {"ok", "nodeId", "command", "payload", "payloadJSON"}
# The reference's answer for a node that has no approved surface (node-facts 4.3).
PAIRING_CHANGED = {"code": "UNAVAILABLE", "message": "node pairing changed while invocation was active",
                   "retryable": True, "details": {"code": "PAIRING_CHANGED"}}


# -- processes ---------------------------------------------------------------------------------

class NodeHostProcess:
    """`python -m krabfast node run ...` as a subprocess; `.id` is its device (node) id."""

    def __init__(self, port: int, state_dir: Path, log: Path, *, plugin_dir: Path | None = None,
                 token: str = TOKEN) -> None:
        args = [sys.executable, "-m", "krabfast", "node", "run", "--host", "127.0.0.1",
                "--port", str(port), "--token", token, "--state-dir", str(state_dir)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if plugin_dir is not None:
            args += ["--plugin", PLUGIN]
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugin_dir), str(REPO),
                                                            env.get("PYTHONPATH")) if p)
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.id = self._read_id()

    def _read_id(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                if line.startswith("node ") and " serving " in line:
                    return line.split()[1]
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"node host did not start:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class NodeHosts:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[NodeHostProcess] = []

    def plugin_dir(self) -> Path:
        folder = self.tmp / "plugin"
        folder.mkdir(exist_ok=True)
        (folder / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
        return folder

    def __call__(self, port: int, *, plugin: bool = False, name: str | None = None,
                 token: str = TOKEN) -> NodeHostProcess:
        name = name or f"node{len(self.started)}"
        node = NodeHostProcess(port, self.tmp / f"{name}-state", self.tmp / f"{name}.log",
                               plugin_dir=self.plugin_dir() if plugin else None, token=token)
        self.started.append(node)
        return node

    def stop_all(self) -> None:
        for node in self.started:
            node.stop()


# -- clients -----------------------------------------------------------------------------------

async def admin_ws(url: str, scopes=ADMIN_SCOPES, instance_id: str | None = None) -> RawWS:
    """An operator with a shared token that keeps its scopes (gateway-client/backend, loopback)."""
    return await RawWS.connected(url, client_id="gateway-client", mode="backend",
                                 scopes=list(scopes), instance_id=instance_id)


async def nodes_cli(url: str, *args: str, timeout: float = 20.0) -> tuple[int, str, str]:
    """`python -m krabfast nodes <args> --url URL --token T`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "krabfast", "nodes", *args, "--url", url, "--token", TOKEN,
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def cli_json(url: str, *args: str):
    code, out, err = await nodes_cli(url, *args, "--json")
    assert code == 0, (code, out, err)
    return json.loads(out)


async def requested(admin: RawWS, node_id: str, timeout: float = 10.0) -> dict:
    """The `node.pair.requested` event for `node_id` (the node connected and waits)."""
    event = await admin.event("node.pair.requested", timeout,
                              pred=lambda f: f["payload"]["nodeId"] == node_id)
    return event["payload"]


async def approve(admin: RawWS, request_id: str) -> dict:
    res = await admin.call("node.pair.approve", {"requestId": request_id})
    assert res["ok"] is True, res
    return res["payload"]


async def node_row(ws: RawWS, node_id: str) -> dict | None:
    res = await ws.call("node.list", {})
    assert res["ok"] is True, res
    return next((n for n in res["payload"]["nodes"] if n["nodeId"] == node_id), None)


async def wait_row(ws: RawWS, node_id: str, pred, timeout: float = 10.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        row = await node_row(ws, node_id)
        if row is not None and pred(row):
            return row
        assert loop.time() < deadline, f"node.list never matched; last row: {row}"
        await asyncio.sleep(0.05)


_keys = iter(range(1, 10**9))


def invoke_params(node_id: str, command: str, params=None, *, key: str | None = None,
                  timeout_ms: int | None = None) -> dict:
    out = {"nodeId": node_id, "command": command,
           "idempotencyKey": key or f"k-{next(_keys)}-{time.time_ns()}"}
    if params is not None:
        out["params"] = params
    if timeout_ms is not None:
        out["timeoutMs"] = timeout_ms
    return out


async def invoke(ws: RawWS, node_id: str, command: str, params=None, *, timeout: float = 10.0,
                 **kw) -> dict:
    return await ws.call("node.invoke", invoke_params(node_id, command, params, **kw),
                         timeout=timeout)


def assert_result(res: dict, node_id: str, command: str) -> dict:
    """A successful node.invoke: {ok, nodeId, command, payload, payloadJSON}; returns payload."""
    assert res["ok"] is True, res
    body = res["payload"]
    assert set(body) == RESULT_KEYS, body
    assert body["ok"] is True and body["nodeId"] == node_id and body["command"] == command, body
    assert isinstance(body["payloadJSON"], str) and json.loads(body["payloadJSON"]) == body["payload"]
    return body["payload"]


def node_failure(code: str, message: str, dispatched: bool = True) -> dict:
    """The reference's error for an invoke that failed at or on the node (node-facts 4.3)."""
    return {"code": "UNAVAILABLE", "message": f"{code}: {message}",
            "details": {"nodeError": {"code": code, "message": message},
                        "nodeCommandDispatched": dispatched}}


NOT_CONNECTED = {"code": "UNAVAILABLE", "message": "node not connected",
                 "details": {"code": "NOT_CONNECTED",
                             "nodeError": {"code": "NOT_CONNECTED", "message": "node not connected"},
                             "nodeCommandDispatched": False}}


def assert_error(res: dict, code: str, *fragments: str) -> dict:
    assert res["ok"] is False, res
    err = res["error"]
    assert err["code"] == code, err
    for fragment in fragments:
        assert fragment in err["message"], err
    return err


async def raw_node(url: str, key: DeviceKey, commands: list[str]) -> RawWS:
    """A raw socket connected as role node (signed device, shared token)."""
    ws = await RawWS.open(url)
    params = connect_params(client_id="node-host", mode="node", role="node", scopes=[],
                            commands=commands)
    key.sign_into(params, ws.challenge, TOKEN)
    res = await ws.call("connect", params)
    assert res["ok"] is True, res
    assert res["payload"]["auth"]["role"] == "node"
    return ws


async def approved_raw_node(url: str, admin: RawWS, key: DeviceKey, commands: list[str]) -> RawWS:
    node = await raw_node(url, key, commands)
    await approve(admin, (await requested(admin, key.id))["requestId"])
    return node


async def answer(node: RawWS, request: dict, node_id: str, payload) -> dict:
    return await node.call("node.invoke.result", {"id": request["id"], "nodeId": node_id,
                                                  "ok": True, "payload": payload})


def expected_stat(path: Path) -> dict:
    info = os.stat(path)
    return {"ok": True, "path": os.path.realpath(path),
            "type": "directory" if path.is_dir() else "file", "size": info.st_size}
