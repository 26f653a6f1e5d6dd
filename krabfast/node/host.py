"""The node host: one connection to a gateway as role "node", kept up with backoff.

It proves a device identity (an Ed25519 key in its state directory), declares its
commands, answers `node.invoke.request` events with `node.invoke.result`, and reports host
stats. It tries protocol 4 and falls back to 3 for older gateways.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import shutil
import socket
from pathlib import Path

from krabfast.client import GatewayClient, GatewayClientError, RequestError
from krabfast.client.hints import explain_request_error
from krabfast.client.identity import DeviceIdentity
from krabfast.node.commands import CommandRegistry, NodeCommandError, default_registry

log = logging.getLogger("krabfast.node")

HOST_STATS_INTERVAL_S = 60.0
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 30.0


def host_stats() -> dict:
    stats: dict = {"cpuCount": max(1, min(4096, os.cpu_count() or 1))}
    try:
        load = os.getloadavg()
        if any(load):
            stats["loadAverage"] = [round(v, 2) for v in load]
    except OSError:
        pass
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        avail = os.sysconf("SC_AVPHYS_PAGES")
        stats["memoryTotalBytes"], stats["memoryFreeBytes"] = pages * size, avail * size
    except (ValueError, OSError):
        pass
    try:
        disk = shutil.disk_usage(Path.home())
        stats["diskTotalBytes"], stats["diskAvailableBytes"] = disk.total, disk.free
    except OSError:
        pass
    return stats


def connect_failure(url: str, exc: BaseException) -> str:
    """One line for a failed connect: the approval command when the device waits for
    pairing, krabfast's flags for auth failures."""
    if isinstance(exc, RequestError):
        details = exc.details if isinstance(exc.details, dict) else {}
        request_id = details.get("requestId")
        if details.get("code") == "PAIRING_REQUIRED" and isinstance(request_id, str):
            where = "" if url.rstrip("/") == "ws://127.0.0.1:18789" else f" --url {url}"
            return (f"{exc.message} (requestId {request_id}): approve this node's device with "
                    f"`krabfast devices approve {request_id}{where}`")
        return f"cannot connect to {url}: {explain_request_error(exc)}"
    if isinstance(exc, asyncio.TimeoutError):
        return f"cannot connect to {url}: no answer in time"
    return f"cannot connect to {url}: {exc or type(exc).__name__}"


class NodeHost:
    def __init__(self, url: str, *, token: str | None = None, password: str | None = None,
                 state_dir: str | os.PathLike | None = None, registry: CommandRegistry | None = None,
                 display_name: str | None = None, tls_fingerprint: str | None = None) -> None:
        self.url = url
        self.tls_fingerprint = tls_fingerprint  # wss:// certificate pin (client/tls.py)
        self.token = token
        self.password = password
        self.state_dir = Path(state_dir) if state_dir else Path.home() / ".krabfast" / "node"
        self.registry = registry or default_registry()
        self.display_name = display_name or socket.gethostname()
        self.identity = DeviceIdentity.load_or_create(self.state_dir / "node-identity.pem")
        self.protocol = 4
        self.client: GatewayClient | None = None
        self.connected = asyncio.Event()
        self._stop = False

    @property
    def node_id(self) -> str:
        return self.identity.device_id

    # -- device token kept between runs ----------------------------------------------------------
    def _token_file(self) -> Path:
        return self.state_dir / "node-device-token.json"

    def _stored_token(self) -> str | None:
        try:
            return json.loads(self._token_file().read_text()).get("token")
        except (OSError, ValueError):
            return None

    def _store_token(self, token: str | None) -> None:
        if token and token != self._stored_token():
            path = self._token_file()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"deviceId": self.node_id, "role": "node", "token": token}, fh)

    # -- connection ------------------------------------------------------------------------------
    def _client(self) -> GatewayClient:
        use_secret = bool(self.token or self.password)
        return GatewayClient(
            self.url, token=self.token, password=self.password, role="node", scopes=[],
            client_id="node-host", mode="node", display_name=self.display_name,
            instance_id=self.node_id, min_protocol=self.protocol, max_protocol=self.protocol,
            device=self.identity, device_token=None if use_secret else self._stored_token(),
            tls_fingerprint=self.tls_fingerprint,
            extra_params={"caps": sorted(self.registry.caps), "commands": self.registry.names(),
                          "pathEnv": os.environ.get("PATH", "")})

    async def connect_once(self) -> GatewayClient:
        """Connect (v4, else v3); raises on failure."""
        while True:
            client = self._client()
            try:
                await client.connect()
            except RequestError as exc:
                await client.close()
                details = exc.details if isinstance(exc.details, dict) else {}
                if details.get("code") == "PROTOCOL_MISMATCH" and self.protocol == 4:
                    self.protocol = 3
                    continue
                raise
            self._store_token(client.hello.auth.device_token or None)
            return client

    async def run(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self._stop:
            try:
                client = await self.connect_once()
            except (GatewayClientError, OSError, asyncio.TimeoutError) as exc:
                log.warning("node: %s (retrying in %.0f s)", connect_failure(self.url, exc), backoff)
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                continue
            backoff = BACKOFF_MIN_S
            log.info("node %s connected to %s (protocol %d)", self.node_id[:12], self.url, self.protocol)
            self.client = client
            self.connected.set()
            try:
                await self._serve(client)
            finally:
                self.connected.clear()
                self.client = None
                await client.close()
            if not self._stop:
                log.info("node: connection lost; reconnecting")
                await asyncio.sleep(backoff)

    async def stop(self) -> None:
        self._stop = True
        if self.client is not None:
            await self.client.close()

    async def _serve(self, client: GatewayClient) -> None:
        stats = asyncio.ensure_future(self._report_stats(client))
        tasks: set[asyncio.Task] = set()
        gone = asyncio.ensure_future(client.disconnected.wait())
        try:
            while True:
                nxt = asyncio.ensure_future(client.events.get())
                done, _ = await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    return
                event = nxt.result()
                if event.event == "node.invoke.request" and isinstance(event.payload, dict):
                    task = asyncio.ensure_future(self._invoke(client, event.payload))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            stats.cancel()
            gone.cancel()

    async def _report_stats(self, client: GatewayClient) -> None:
        while True:
            try:
                await client.request("node.event", {"event": "node.host.stats", "payload": host_stats()})
            except (GatewayClientError, asyncio.TimeoutError):
                return
            await asyncio.sleep(HOST_STATS_INTERVAL_S)

    async def _invoke(self, client: GatewayClient, request: dict) -> None:
        invoke_id, command = request.get("id"), request.get("command")
        result: dict = {"id": invoke_id, "nodeId": self.node_id}
        handler = self.registry.get(command)
        try:
            if handler is None:
                raise NodeCommandError("INVALID_REQUEST", f"unknown command: {command}")
            params = json.loads(request["paramsJSON"]) if request.get("paramsJSON") else {}
            if not isinstance(params, dict):
                raise NodeCommandError("INVALID_REQUEST", "params must be an object")
            if inspect.iscoroutinefunction(handler):
                payload = await handler(params)
            else:
                payload = await asyncio.to_thread(handler, params)
            result.update(ok=True, payloadJSON=json.dumps(payload, separators=(",", ":")))
        except NodeCommandError as exc:
            result.update(ok=False, error={"code": exc.code, "message": exc.message})
        except Exception as exc:  # a plugin's bug must not take the node down
            log.exception("node command %s failed", command)
            result.update(ok=False, error={"code": "UNAVAILABLE", "message": f"{command} failed: {exc}"})
        try:
            await client.request("node.invoke.result", result)
        except (GatewayClientError, asyncio.TimeoutError) as exc:
            log.warning("node: could not deliver the result of %s: %s", command, exc)

