"""An asyncio gateway client: challenge, connect, request correlation, events.

What it receives is checked leniently (krabfast/client/views.py): the fields it relies on
must be there and well typed, anything a newer gateway adds is ignored. Tests that want
strict conformance validate the raw frames through the `on_frame` hook.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import platform as _platform
import ssl
import uuid
from typing import Any
from urllib.parse import urlsplit

import msgspec
from picows import (WSCloseCode, WSError, WSHandshakeError, WSInvalidStatusError, WSListener,
                    WSMsgType, ws_connect)

from krabfast import __version__
from krabfast._core import wire
from krabfast.client import tls as _tls
from krabfast.client.views import (ChallengeView, EventView, HelloView, ResponseView,
                                   frame_decoder)
from krabfast.protocol.version import PROTOCOL_VERSION
from krabfast.wsutil import echo_close


class GatewayClientError(Exception):
    """Transport or protocol failure (not a method error)."""


class GatewayConnectError(GatewayClientError):
    """The gateway could not be reached, or what answered is not a WebSocket gateway."""


def check_url(url: str) -> tuple[str, int, bool]:
    """(host, port, secure) of a gateway URL; GatewayConnectError with a readable
    message for anything that is not a ws:// or wss:// URL."""
    if not isinstance(url, str) or not url.strip():
        raise GatewayConnectError("no gateway URL given")
    if "://" not in url:
        raise GatewayConnectError(f"gateway URL {url!r} has no scheme: use ws://{url} "
                                  "(or wss:// for a gateway behind TLS)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        fixed = ("wss" if scheme == "https" else "ws") + url[len(parts.scheme):]
        raise GatewayConnectError(f"gateway URL {url!r} is an HTTP URL: use {fixed}")
    if scheme not in ("ws", "wss"):
        raise GatewayConnectError(f"gateway URL {url!r} has scheme {parts.scheme!r}: use ws:// "
                                  "(or wss:// for TLS)")
    try:
        port = parts.port
    except ValueError:
        raise GatewayConnectError(f"gateway URL {url!r} has an invalid port") from None
    if not parts.hostname:
        raise GatewayConnectError(f"gateway URL {url!r} has no host")
    secure = scheme == "wss"
    return parts.hostname, port if port is not None else (443 if secure else 80), secure


async def _plain_websocket_at(host: str, port: int, timeout: float) -> bool:
    """True when host:port answers a plain-text (non-TLS) WebSocket upgrade with 101."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        writer.write(f"GET / HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith(b"HTTP/1.1 101")
    except (OSError, asyncio.TimeoutError, ValueError):
        return False
    finally:
        writer.transport.abort()


def _status_line(exc: WSHandshakeError) -> str:
    header = exc.raw_header or b""
    line = header.split(b"\r\n", 1)[0].decode("latin-1", "replace").strip()
    if not line and exc.response is not None:
        line = f"HTTP {exc.response.status}"
    return line


def _describe_connect_error(url: str, host: str, port: int, secure: bool,
                            exc: BaseException) -> str:
    where = f"{host}:{port}"
    if isinstance(exc, WSInvalidStatusError) and exc.response is not None:
        body = (exc.raw_body or b"").decode("utf-8", "replace").strip().splitlines()
        why = f" ({body[0][:200]})" if body else ""
        return (f"{url} answered HTTP {int(exc.response.status)} instead of a WebSocket "
                f"upgrade{why}: is it a gateway?")
    if isinstance(exc, WSHandshakeError):
        answer = _status_line(exc)
        said = f" (it answered {answer!r})" if answer else ""
        if not answer:
            message = str(exc).split(" in upgrade response", 1)[0]
            said = f" ({message})" if message else ""
        return f"{url} is not a WebSocket gateway{said}: check the host and port"
    if isinstance(exc, _tls.TlsPinError):
        got = f", it presented {exc.actual}" if exc.actual else ""
        return f"{exc} ({where}: expected {exc.expected}{got}; nothing was sent)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
        return (f"the TLS certificate of {where} is not trusted ({why}): for a gateway's "
                "self-signed certificate pass its SHA-256 fingerprint (--tls-fingerprint, "
                "printed in the gateway's start-up log)")
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        return (f"TLS handshake with {where} failed ({reason}): if the gateway serves plain "
                f"WebSocket, use ws://")
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {url}: connection refused (is the gateway running?)"
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        if secure and isinstance(exc, (ConnectionResetError, ConnectionAbortedError)):
            return f"{where} closed the connection during the TLS handshake: if it serves " \
                   "plain WebSocket, use ws://"
        return f"cannot connect to {url}: {reason}"
    return f"cannot connect to {url}: {exc or type(exc).__name__}"


class GatewayClosed(GatewayClientError):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"gateway closed the connection ({code}: {reason})" if code else
                         "gateway connection lost")
        self.code = code
        self.reason = reason


class RequestError(GatewayClientError):
    """The gateway answered `ok: false`."""

    def __init__(self, code: str, message: str, details: Any = None,
                 retryable: bool | None = None, retry_after_ms: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms


class _Listener(WSListener):
    def __init__(self, client: "GatewayClient") -> None:
        super().__init__()
        self.client = client

    def on_ws_frame(self, transport, frame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT:
            self.client._on_text(frame.get_payload_as_bytes())
        elif kind is WSMsgType.CLOSE:
            code = frame.get_close_code()
            try:
                reason = frame.get_close_reason()
            except UnicodeDecodeError:
                reason = ""
            has_code = frame.payload_size >= 2
            self.client._on_closed(int(code.value) if has_code else 1005, reason or "")
            echo_close(transport, frame)
            transport.disconnect()

    def on_ws_disconnected(self, transport) -> None:
        self.client._on_closed(None, "")


class GatewayClient:
    def __init__(self, url: str, *, token: str | None = None, password: str | None = None,
                 role: str = "operator", scopes: list[str] | None = None,
                 client_id: str = "gateway-client", mode: str = "backend",
                 display_name: str | None = None, instance_id: str | None = None,
                 min_protocol: int = PROTOCOL_VERSION, max_protocol: int = PROTOCOL_VERSION,
                 timeout: float = 10.0, extra_params: dict | None = None,
                 max_frame_size: int = 64 * 1024 * 1024, on_frame=None,
                 device=None, device_token: str | None = None,
                 tls_fingerprint: str | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = url
        # wss://: with a pin (client/tls.py) exactly that certificate is accepted; else
        # `ssl_context`, else the system's CAs with hostname checks.
        try:
            self.tls_fingerprint = _tls.normalize_fingerprint(tls_fingerprint) \
                if tls_fingerprint else None
        except ValueError as exc:
            raise GatewayConnectError(str(exc)) from None
        self.ssl_context = ssl_context
        self.token = token
        self.password = password
        self.role = role
        self.scopes = list(scopes) if scopes is not None else ["operator.read", "operator.write"]
        self.client_id = client_id
        self.mode = mode
        self.display_name = display_name
        self.instance_id = instance_id or uuid.uuid4().hex
        self.min_protocol = min_protocol
        self.max_protocol = max_protocol
        self.timeout = timeout
        self.extra_params = extra_params or {}
        self.max_frame_size = max_frame_size
        # Called with every raw inbound text frame (tests validate them against the reference).
        self.on_frame = on_frame
        self.sent_methods: dict[str, str] = {}
        self.device = device  # a krabfast.client.identity.DeviceIdentity, to sign the connect
        self.device_token = device_token
        self.hello: HelloView | None = None
        self.challenge: ChallengeView | None = None
        self.events: asyncio.Queue[EventView] = asyncio.Queue()
        self.last_seq: int | None = None
        self.gaps = 0
        self.closed: GatewayClosed | None = None
        self._transport = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future] = {}
        self._challenge_waiter: asyncio.Future | None = None
        self.disconnected = asyncio.Event()  # set once the connection is gone

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> "GatewayClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def open(self) -> ChallengeView:
        """Open the socket and wait for `connect.challenge` (without connecting).

        Transport failures (bad URL, nothing listening, TLS to a plain server, an HTTP
        server that is not a WebSocket gateway, no challenge) raise GatewayConnectError
        with a one-line message."""
        host, port, secure = check_url(self.url)
        if self.tls_fingerprint and not secure:
            raise GatewayConnectError(f"{_tls.NEEDS_WSS} (got {self.url})")
        loop = asyncio.get_running_loop()
        self._challenge_waiter = loop.create_future()
        try:
            self._transport, listener = await self._ws_connect(host, port, secure)
            if listener is None:
                # picows returns no listener when the peer closed before answering the
                # upgrade: what a TLS server does with a plain-text request.
                self._transport = None
                hint = "" if secure else f": if it serves TLS, use wss://{self.url[len('ws://'):]}"
                raise GatewayConnectError(f"{host}:{port} closed the connection without "
                                          f"answering the WebSocket upgrade{hint}")
        except GatewayClientError:
            raise
        except asyncio.TimeoutError:
            raise GatewayConnectError(f"no WebSocket answer from {self.url} within "
                                      f"{self.timeout:g} s") from None
        except (OSError, WSError, ValueError) as exc:
            raise GatewayConnectError(_describe_connect_error(self.url, host, port, secure,
                                                              exc)) from None
        try:
            self.challenge = await asyncio.wait_for(self._challenge_waiter, self.timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise GatewayConnectError(f"{self.url} sent no connect.challenge within "
                                      f"{self.timeout:g} s: is it an OpenClaw gateway?") from None
        except GatewayClientError:
            await self.close()
            raise
        return self.challenge

    async def _ws_connect(self, host: str, port: int, secure: bool):
        # aiofastnet's TLS transport logs a broken traceback on a failed handshake; the
        # standard one just raises (TLS is not the hot path of this client).
        tls_kw = {}
        if secure:
            tls_kw["use_aiofastnet"] = False
            ctx = _tls.pinned_context(self.tls_fingerprint) if self.tls_fingerprint \
                else self.ssl_context
            if ctx is not None:
                tls_kw["ssl_context"] = ctx
        connect = ws_connect(lambda: _Listener(self), self.url, max_frame_size=self.max_frame_size,
                             enable_auto_pong=True, **tls_kw)
        if not secure:
            return await asyncio.wait_for(connect, self.timeout)
        # A plain gateway never answers a TLS ClientHello (it waits for an HTTP request
        # until its own handshake timeout): if TLS is slow to complete, check whether a
        # plain WebSocket server is what listens there, and say so at once.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        task = asyncio.ensure_future(connect)
        try:
            done, _ = await asyncio.wait({task}, timeout=min(0.5, self.timeout))
            if not done and await _plain_websocket_at(host, port, min(2.0, self.timeout)) \
                    and not task.done():
                raise GatewayConnectError(
                    f"{self.url}: the server at {host}:{port} speaks plain WebSocket, not TLS: "
                    f"use ws://{self.url[len('wss://'):]}")
            return await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - loop.time()))
        finally:
            if not task.done():
                task.cancel()
                try:
                    await task
                except BaseException:  # noqa: BLE001 - cancelled or failed: nothing to keep
                    pass

    def connect_params(self) -> dict:
        params: dict[str, Any] = {
            "minProtocol": self.min_protocol,
            "maxProtocol": self.max_protocol,
            "client": {"id": self.client_id, "version": __version__,
                       "platform": _platform.system().lower() or "unknown", "mode": self.mode,
                       "instanceId": self.instance_id},
            "role": self.role,
            "scopes": self.scopes,
            "caps": [],
        }
        if self.display_name:
            params["client"]["displayName"] = self.display_name
        auth = {k: v for k, v in (("token", self.token), ("password", self.password),
                                  ("deviceToken", self.device_token)) if v}
        if auth:
            params["auth"] = auth
        params.update(self.extra_params)
        if self.device is not None and self.challenge is not None:
            signed_token = self.token or self.device_token or ""
            params["device"] = self.device.device_block(params, self.challenge.nonce,
                                                        self.challenge.ts, signed_token)
        return params

    async def connect(self) -> HelloView:
        if self._transport is None:
            await self.open()
        payload = await self.request("connect", self.connect_params())
        try:
            self.hello = msgspec.convert(payload, HelloView)
        except msgspec.ValidationError as exc:
            raise GatewayClientError(f"invalid hello-ok from gateway: {exc}") from None
        return self.hello

    async def close(self) -> None:
        transport = self._transport
        if transport is None:
            return
        self._transport = None
        if not transport.is_disconnected:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            try:
                await asyncio.wait_for(transport.wait_disconnected(), 2)
            except asyncio.TimeoutError:
                transport.disconnect(graceful=False)

    # -- requests ------------------------------------------------------------------------------
    def send_raw(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self._transport.send(WSMsgType.TEXT, data)

    async def request(self, method: str, params: Any = None, *, timeout: float | None = None) -> Any:
        if self.closed is not None:
            raise self.closed
        req_id = str(next(self._ids))
        frame: dict[str, Any] = {"type": "req", "id": req_id, "method": method}
        if params is not None:
            frame["params"] = params
        fut = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        self.sent_methods[req_id] = method
        try:
            self.send_raw(wire.encode_json(frame))
            res: ResponseView = await asyncio.wait_for(fut, timeout or self.timeout)
        finally:
            self._pending.pop(req_id, None)
        if res.ok:
            return None if res.payload is msgspec.UNSET else res.payload
        err = res.error
        raise RequestError(err.code, err.message,
                           None if err.details is msgspec.UNSET else err.details,
                           None if err.retryable is msgspec.UNSET else err.retryable,
                           None if err.retry_after_ms is msgspec.UNSET else err.retry_after_ms)

    async def next_event(self, name: str | None = None, timeout: float | None = None) -> EventView:
        """The next event (optionally the next one called `name`, skipping others)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError(f"no {name or 'event'} within timeout")
            event = await asyncio.wait_for(self.events.get(), left)
            if name is None or event.event == name:
                return event

    # -- inbound -------------------------------------------------------------------------------
    def _on_text(self, data: bytes) -> None:
        if self.on_frame is not None:
            self.on_frame(self, data)
        try:
            frame = frame_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._fail(GatewayClientError(f"invalid frame from gateway: {exc}: {data[:200]!r}"))
            return
        if type(frame) is ResponseView:
            fut = self._pending.get(frame.id)
            if fut is not None and not fut.done():
                fut.set_result(frame)
            return
        if type(frame) is not EventView:
            self._fail(GatewayClientError(f"gateway sent a request frame: {data[:200]!r}"))
            return
        if frame.event == "connect.challenge":
            try:
                challenge = msgspec.convert(frame.payload, ChallengeView)
            except msgspec.ValidationError as exc:
                self._fail(GatewayClientError(f"invalid connect.challenge: {exc}"))
                return
            if self._challenge_waiter is not None and not self._challenge_waiter.done():
                self._challenge_waiter.set_result(challenge)
            return
        if frame.seq is not msgspec.UNSET:
            if self.last_seq is not None and frame.seq != self.last_seq + 1:
                self.gaps += 1
            self.last_seq = frame.seq
        self.events.put_nowait(frame)

    def _fail(self, exc: GatewayClientError) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        if self._challenge_waiter is not None and not self._challenge_waiter.done():
            self._challenge_waiter.set_exception(exc)

    def _on_closed(self, code: int | None, reason: str) -> None:
        if self.closed is None or (self.closed.code is None and code is not None):
            self.closed = GatewayClosed(code, reason)
        self._fail(self.closed)
        self.disconnected.set()
