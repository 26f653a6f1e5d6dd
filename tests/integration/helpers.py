"""Raw-socket and client helpers for the integration suite.

Every text frame received from krabfast goes through `validate()`, which runs
`tests.refschema.check_frame` (with the request's method for `res` frames). Failures are
collected in `FRAME_ERRORS` (a picows callback must not raise) and the autouse fixture in
conftest.py fails the test that produced them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any, Callable

from picows import WSCloseCode, WSListener, WSMsgType, ws_connect

from krabfast.client import GatewayClient
from tests import refschema

TOKEN = "T"
FRAME_ERRORS: list[str] = []


def validate(data: bytes, method: str | None = None) -> dict:
    """Check one frame against the reference schema; record (not raise) failures."""
    try:
        return refschema.check_frame(data, method)
    except Exception as exc:  # noqa: BLE001 - any failure is a finding
        FRAME_ERRORS.append(f"{type(exc).__name__}: {exc}\nframe: {data[:500]!r}")
        try:
            return json.loads(data)
        except ValueError:
            return {"type": "<unparseable>", "raw": data[:200]}


def _client_on_frame(client: GatewayClient, data: bytes) -> None:
    method = None
    try:
        obj = json.loads(data)
        if obj.get("type") == "res":
            method = client.sent_methods.get(obj.get("id"))
    except (ValueError, AttributeError):
        pass
    validate(data, method)


def gateway_client(url: str, **kw) -> GatewayClient:
    """A krabfast GatewayClient whose every inbound frame is schema-checked."""
    kw.setdefault("token", TOKEN)
    kw.setdefault("timeout", 5.0)
    return GatewayClient(url, on_frame=_client_on_frame, **kw)


def connect_params(*, token: str | None = TOKEN, password: str | None = None,
                   client_id: str = "test", mode: str = "test",
                   scopes=("operator.admin",), role: str = "operator",
                   instance_id: str | None = None, display_name: str | None = None,
                   min_protocol: int = 4, max_protocol: int = 4, **extra) -> dict:
    client: dict[str, Any] = {"id": client_id, "version": "1.0.0", "platform": "linux",
                              "mode": mode, "instanceId": instance_id or uuid.uuid4().hex}
    if display_name:
        client["displayName"] = display_name
    params: dict[str, Any] = {"minProtocol": min_protocol, "maxProtocol": max_protocol,
                              "client": client, "role": role, "scopes": list(scopes), "caps": []}
    auth = {k: v for k, v in (("token", token), ("password", password)) if v is not None}
    if auth:
        params["auth"] = auth
    params.update(extra)
    return params


class RawWS(WSListener):
    """One raw picows client socket that records everything the server sends."""

    def __init__(self) -> None:
        super().__init__()
        self.transport = None
        self.frames: list[dict] = []      # every text frame, in arrival order
        self.raw: list[bytes] = []
        self._pending: list[dict] = []    # not yet consumed by take()
        self._changed = asyncio.Event()
        self.methods: dict[str, str] = {}
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.got_close_frame = False
        self.disconnected = asyncio.Event()
        self.pongs: asyncio.Queue[bytes] = asyncio.Queue()
        self._ids = itertools.count(1)

    # -- picows callbacks ----------------------------------------------------------------------
    def on_ws_connected(self, transport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport, frame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            data = frame.get_payload_as_bytes()
            self.raw.append(data)
            method = None
            try:
                obj = json.loads(data)
                if isinstance(obj, dict) and obj.get("type") == "res":
                    method = self.methods.get(obj.get("id"))
            except ValueError:
                pass
            if kind is WSMsgType.BINARY:
                FRAME_ERRORS.append(f"server sent a binary frame: {data[:200]!r}")
            parsed = validate(data, method)
            self.frames.append(parsed)
            self._pending.append(parsed)
            self._changed.set()
        elif kind is WSMsgType.CLOSE:
            if not self.got_close_frame:
                self.got_close_frame = True
                code = frame.get_close_code()
                self.close_code = int(code.value) if code is not None else None
                try:
                    self.close_reason = frame.get_close_reason() or ""
                except UnicodeDecodeError:
                    self.close_reason = "<invalid utf-8>"
                if not transport.is_close_frame_sent:
                    transport.send_close(code if code is not None else WSCloseCode.OK)
                transport.disconnect()
            self._changed.set()
        elif kind is WSMsgType.PONG:
            self.pongs.put_nowait(frame.get_payload_as_bytes())

    def on_ws_disconnected(self, transport) -> None:
        self.disconnected.set()
        self._changed.set()

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    async def open(cls, url: str, *, challenge: bool = True, timeout: float = 5.0,
                   max_frame_size: int = 64 * 1024 * 1024, auto_pong: bool = True,
                   **connect_kw) -> "RawWS":
        """`connect_kw` go to picows.ws_connect (e.g. `local_addr=("127.0.0.2", 0)`)."""
        transport, ws = await asyncio.wait_for(
            ws_connect(cls, url, max_frame_size=max_frame_size, enable_auto_pong=auto_pong,
                       **connect_kw), timeout)
        if challenge:
            frame = await ws.take(lambda f: f.get("event") == "connect.challenge", timeout)
            assert frame["type"] == "event" and "seq" not in frame, frame
            ws.challenge = frame["payload"]
        return ws

    @classmethod
    async def connected(cls, url: str, *, timeout: float = 5.0, connect_kw: dict | None = None,
                        **params) -> "RawWS":
        """Open, answer the challenge with a connect, and expect hello-ok."""
        ws = await cls.open(url, timeout=timeout, **(connect_kw or {}))
        res = await ws.call("connect", connect_params(**params), timeout=timeout)
        assert res["ok"] is True, res
        ws.hello = res["payload"]
        return ws

    # -- sending -------------------------------------------------------------------------------
    def send(self, data: bytes | str | dict | list, msg_type: WSMsgType = WSMsgType.TEXT) -> None:
        if isinstance(data, (dict, list)):
            if isinstance(data, dict) and data.get("type") == "req" and isinstance(data.get("id"), str):
                self.methods[data["id"]] = data.get("method")
            data = json.dumps(data)
        if isinstance(data, str):
            data = data.encode()
        self.transport.send(msg_type, data)

    def request(self, method: str, params: Any = None, req_id: str | None = None) -> str:
        req_id = req_id or f"r{next(self._ids)}"
        frame: dict[str, Any] = {"type": "req", "id": req_id, "method": method}
        if params is not None:
            frame["params"] = params
        self.send(frame)
        return req_id

    async def call(self, method: str, params: Any = None, *, timeout: float = 5.0) -> dict:
        """Send a request and return its whole `res` frame."""
        req_id = self.request(method, params)
        return await self.response(req_id, timeout)

    # -- receiving -----------------------------------------------------------------------------
    async def take(self, pred: Callable[[dict], bool], timeout: float = 5.0) -> dict:
        """Remove and return the first unconsumed frame matching `pred` (waiting for it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, frame in enumerate(self._pending):
                if pred(frame):
                    return self._pending.pop(i)
            if self.disconnected.is_set():
                raise AssertionError(f"socket closed ({self.close_code} {self.close_reason!r}) "
                                     f"before a matching frame; got {self.frames[-5:]}")
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError(f"no matching frame in {timeout}s; got {self.frames[-5:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def response(self, req_id: str, timeout: float = 5.0) -> dict:
        return await self.take(lambda f: f.get("type") == "res" and f.get("id") == req_id, timeout)

    async def event(self, name: str, timeout: float = 5.0,
                    pred: Callable[[dict], bool] | None = None) -> dict:
        return await self.take(lambda f: f.get("type") == "event" and f.get("event") == name
                               and (pred is None or pred(f)), timeout)

    def events(self, name: str | None = None) -> list[dict]:
        """Every event received so far (consumed or not)."""
        return [f for f in self.frames if f.get("type") == "event"
                and (name is None or f.get("event") == name)]

    async def barrier(self, timeout: float = 5.0) -> None:
        """Round-trip a request every authenticated socket may make (`health`): every frame
        the server wrote to this socket before handling it has now arrived."""
        res = await self.call("health", timeout=timeout)
        assert res["ok"] is True, res

    async def wait_closed(self, timeout: float = 5.0) -> tuple[int | None, str | None]:
        """Wait until the server closes; returns (close code, reason), code None = no close frame."""
        await asyncio.wait_for(self.disconnected.wait(), timeout)
        return self.close_code, self.close_reason

    async def ping(self, payload: bytes = b"krab", timeout: float = 5.0) -> bytes:
        self.transport.send_ping(payload)
        return await asyncio.wait_for(self.pongs.get(), timeout)

    async def close(self) -> None:
        t = self.transport
        if t is None or t.is_disconnected:
            return
        if not t.is_close_frame_sent:
            t.send_close(WSCloseCode.OK)
        t.disconnect()
        try:
            await asyncio.wait_for(self.disconnected.wait(), 2)
        except asyncio.TimeoutError:
            t.disconnect(graceful=False)


def run(coro, timeout: float = 30.0):
    """Run one test coroutine on a fresh loop with an overall time limit."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
