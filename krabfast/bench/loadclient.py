"""A lean picows load client: challenge -> connect -> hello-ok, then raw frames.

Built for thousands of sockets per process: no validation, no per-frame JSON parsing on
the hot paths (response ids, tick events and watched markers are found by byte prefix,
with an orjson fallback for gateways that order keys differently). The same code drives
krabfast, the reference gateway and the bare echo server.

The connect request is what `GatewayClient` from @openclaw/gateway-client sends by default
without a device identity: client `gateway-client`, mode `backend`, role operator, and
`operator.read` + `operator.admin` (kept for local backend clients without a device, so
`system-event` works and `presence` broadcasts reach every receiver).
"""

from __future__ import annotations

import asyncio
import platform
import time

import orjson
from picows import WSCloseCode, WSListener, WSMsgType, ws_connect

from krabfast import __version__

PROTOCOL = 4
CONNECT_ID = b"c1"
SCOPES = ["operator.read", "operator.admin"]
MAX_FRAME = 64 * 1024 * 1024

_RES = b'{"type":"res"'
_RES_ID = b'{"type":"res","id":"'
_EVENT = b'{"type":"event"'
_TICK = b'{"type":"event","event":"tick"'
_OK_TRUE = b'"ok":true'

# connection states
CHALLENGE, CONNECTING, OPEN, CLOSED = 0, 1, 2, 3

monotonic = time.monotonic


class BenchError(Exception):
    """A failed handshake or request; `kind` is a short label for error tallies."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def connect_frame(token: str | None, *, client_id: str = "gateway-client", mode: str = "backend",
                  scopes: list[str] | None = None) -> bytes:
    params = {
        "minProtocol": PROTOCOL, "maxProtocol": PROTOCOL,
        "client": {"id": client_id, "version": __version__,
                   "platform": platform.system().lower() or "linux", "mode": mode},
        "role": "operator",
        "scopes": list(SCOPES if scopes is None else scopes),
        "caps": [],
    }
    if token:
        params["auth"] = {"token": token}
    return orjson.dumps({"type": "req", "id": CONNECT_ID.decode(), "method": "connect",
                         "params": params})


def request_parts(method: str, params) -> tuple[bytes, bytes]:
    """(prefix, suffix) so that prefix + id + suffix is a request frame."""
    suffix = b'","method":' + orjson.dumps(method)
    if params is not None:
        suffix += b',"params":' + orjson.dumps(params)
    return b'{"type":"req","id":"', suffix + b"}"


def parse_res(data: bytes) -> tuple[bytes, bool]:
    """(id, ok) of a `res` frame; fast path for the usual key order."""
    if data.startswith(_RES_ID):
        end = data.find(b'"', 20)
        if end > 0:
            return data[20:end], data.startswith(_OK_TRUE, end + 2)
    obj = orjson.loads(data)
    return str(obj.get("id", "")).encode(), obj.get("ok") is True


def error_code(data: bytes) -> str:
    try:
        err = orjson.loads(data).get("error") or {}
        details = err.get("details") if isinstance(err.get("details"), dict) else {}
        code = str(err.get("code", "ERROR"))
        return f"{code}/{details['code']}" if details.get("code") else code
    except (orjson.JSONDecodeError, AttributeError):
        return "unparseable"


def frame_kind(data: bytes) -> tuple[str, str | None]:
    """("res"|"event"|"other", event name or None) for frames in an unusual key order."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "other", None
    if not isinstance(obj, dict):
        return "other", None
    kind = obj.get("type")
    if kind == "event":
        return "event", str(obj.get("event"))
    return ("res", None) if kind == "res" else ("other", None)


class Watch:
    """Receive times of the first frame containing `marker`, one per socket (fan-out)."""

    def __init__(self) -> None:
        self.marker: bytes | None = None
        self.round = 0
        self.stamps: list[float] = []
        self.expected = 0
        self.done: asyncio.Future | None = None

    def arm(self, marker: bytes, expected: int) -> None:
        self.marker = marker
        self.round += 1
        self.stamps = []
        self.expected = expected
        self.done = asyncio.get_running_loop().create_future()
        if expected <= 0:
            self.done.set_result(None)

    def hit(self, stamp: float) -> None:
        self.stamps.append(stamp)
        if len(self.stamps) >= self.expected and self.done is not None and not self.done.done():
            self.done.set_result(None)


class Counters:
    """Events seen by a group of sockets (shared, cheaper than per-socket objects)."""

    __slots__ = ("events", "presence", "chat_deltas", "chat_finals")

    def __init__(self) -> None:
        self.events = 0
        self.presence = 0
        self.chat_deltas = 0  # `chat` events by state (the chat scenario's watchers)
        self.chat_finals = 0


class BenchConn(WSListener):
    """One load socket. `ready` resolves at hello-ok (or fails with BenchError)."""

    def __init__(self, connect_bytes: bytes, *, watch: Watch | None = None,
                 counters: Counters | None = None, want_hello: bool = False) -> None:
        super().__init__()
        self.connect_bytes = connect_bytes
        self.watch = watch
        self.counters = counters
        self.want_hello = want_hello
        self.hello: dict | None = None
        self.transport = None
        self.state = CHALLENGE
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.ticks = 0
        self.seen_round = 0
        self.close_code: int | None = None
        self.on_res = None  # callable(conn, data) while a request driver runs
        self.sent: dict[bytes, float] = {}

    # picows callbacks --------------------------------------------------------------------------
    def on_ws_connected(self, transport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport, frame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT:
            data = frame.get_payload_as_bytes()
            if self.state == OPEN:
                self._on_open_frame(data)
            elif self.state == CHALLENGE:
                self._on_challenge(data)
            elif self.state == CONNECTING:
                self._on_connect_res(data)
        elif kind is WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code()) if frame.payload_size >= 2 else 1005
            if not transport.is_close_frame_sent:
                if frame.payload_size >= 2:
                    transport.send_close(frame.get_close_code())
                else:
                    transport.send(WSMsgType.CLOSE, b"")
            transport.disconnect()

    def on_ws_disconnected(self, transport) -> None:
        self.state = CLOSED
        if not self.ready.done():
            code = f" {self.close_code}" if self.close_code is not None else ""
            self.ready.set_exception(BenchError("closed-in-handshake" + code))

    # handshake -----------------------------------------------------------------------------------
    def _on_challenge(self, data: bytes) -> None:
        if b"connect.challenge" not in data:
            if frame_kind(data) != ("event", "connect.challenge"):
                return
        self.state = CONNECTING
        self.transport.send(WSMsgType.TEXT, self.connect_bytes)

    def _on_connect_res(self, data: bytes) -> None:
        if not data.startswith(_RES):
            kind, _ = frame_kind(data)
            if kind != "res":
                return  # an event before the hello-ok
        rid, ok = parse_res(data)
        if rid != CONNECT_ID:
            return
        if not ok:
            self.ready.set_exception(BenchError("connect " + error_code(data)))
            return
        self.state = OPEN
        if self.want_hello:
            try:
                self.hello = orjson.loads(data).get("payload") or {}
            except orjson.JSONDecodeError:
                self.hello = {}
        if not self.ready.done():
            self.ready.set_result(self)

    # after hello-ok ------------------------------------------------------------------------------
    def _on_open_frame(self, data: bytes) -> None:
        if data.startswith(_RES):
            if self.on_res is not None:
                self.on_res(self, data)
            return
        if data.startswith(_EVENT):
            if data.startswith(_TICK):
                self.ticks += 1
                return
            name = None
        else:
            kind, name = frame_kind(data)
            if kind == "res":
                if self.on_res is not None:
                    self.on_res(self, data)
                return
            if kind != "event":
                return
            if name == "tick":
                self.ticks += 1
                return
        counters = self.counters
        if counters is not None:
            counters.events += 1
            if name == "presence" or (name is None and data.startswith(b'"presence"', 24)):
                counters.presence += 1
            elif name == "chat" or (name is None and data.startswith(b'"chat"', 24)):
                if b'"state":"delta"' in data:
                    counters.chat_deltas += 1
                elif b'"state":"final"' in data:
                    counters.chat_finals += 1
        watch = self.watch
        if watch is not None and watch.marker is not None and self.seen_round != watch.round \
                and watch.marker in data:
            self.seen_round = watch.round
            watch.hit(monotonic())

    # actions -------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    def send(self, data: bytes) -> None:
        self.transport.send(WSMsgType.TEXT, data)

    def close(self) -> None:
        transport = self.transport
        if transport is None or self.state == CLOSED:
            return
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK)
        transport.disconnect()


async def open_conn(url: str, connect_bytes: bytes, *, timeout: float = 15.0,
                    **kw) -> BenchConn:
    """Open a socket and complete the handshake; raise BenchError on failure."""
    try:
        _transport, conn = await ws_connect(lambda: BenchConn(connect_bytes, **kw), url,
                                            websocket_handshake_timeout=timeout,
                                            max_frame_size=MAX_FRAME, enable_auto_pong=True)
    except asyncio.TimeoutError:
        raise BenchError("ws-timeout") from None
    except OSError as exc:
        raise BenchError(type(exc).__name__, str(exc)[:80]) from None
    except Exception as exc:  # picows WSError (e.g. HTTP 503 at the upgrade) and the like
        text = str(exc)
        status = next((w for w in text.split() if w.isdigit() and len(w) == 3), None)
        raise BenchError(f"upgrade-{status}" if status else type(exc).__name__, text[:80]) from None
    try:
        await asyncio.wait_for(conn.ready, timeout)
    except asyncio.TimeoutError:
        conn.close()
        raise BenchError("handshake-timeout") from None
    except BenchError:
        conn.close()
        raise
    return conn


async def close_conn(conn: BenchConn, timeout: float = 2.0) -> None:
    conn.close()
    transport = conn.transport
    if transport is None:
        return
    try:
        await asyncio.wait_for(transport.wait_disconnected(), timeout)
    except asyncio.TimeoutError:
        transport.disconnect(graceful=False)
