"""A minimal raw WebSocket client for the `handshake` scenario.

Measuring connects/s on two cores shared by load and server means the load client must
cost far less than the server, or the figure measures the client. picows' `ws_connect`
(URL parsing, header objects, a listener per socket) costs about as much CPU as a server
handshake. This client speaks just enough RFC 6455 for open -> challenge -> connect ->
response -> close: a pre-built upgrade request, unmasked server frames parsed by hand, and
the connect frame masked once up front (any mask key is valid; servers do not check it).
The same bytes go to every gateway under test.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from urllib.parse import urlsplit

monotonic = time.monotonic

_MASK = b"\x1f\x2e\x3d\x4c"
_CLOSE_FRAME = b"\x88\x80" + _MASK  # masked CLOSE, no status code


def masked_text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x81, 0x80 | n))
    elif n < 65536:
        header = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    masked = bytes(b ^ _MASK[i & 3] for i, b in enumerate(payload))
    return header + _MASK + masked


def upgrade_request(url: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    return host, port, request


class HandshakeProtocol(asyncio.Protocol):
    """One connect: resolves `done` with None on a hello (ok response) or an error label."""

    __slots__ = ("request", "connect", "done", "buf", "upgraded", "frames", "transport")

    def __init__(self, request: bytes, connect: bytes, done: asyncio.Future) -> None:
        self.request = request
        self.connect = connect
        self.done = done
        self.buf = b""
        self.upgraded = False
        self.frames = 0
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            status = buf[9:12]
            if status != b"101":
                self._finish(f"upgrade-{status.decode(errors='replace')}")
                return
            self.upgraded = True
            buf = buf[end + 4:]
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            start = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, start = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, start = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < start + n:
                break
            opcode, payload, buf = buf[0] & 0x0F, buf[start:start + n], buf[start + n:]
            if opcode == 0x8:
                self._finish("closed")
                return
            if opcode != 0x1:
                continue
            self.frames += 1
            if self.frames == 1:  # connect.challenge
                self.transport.write(self.connect)
            elif payload.startswith(b'{"type":"res"'):
                self._finish(None if b'"ok":true' in payload else "connect-error")
                return
        self.buf = buf

    def _finish(self, error: str | None) -> None:
        if not self.done.done():
            self.done.set_result(error)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if error is None:
                transport.write(_CLOSE_FRAME)
            transport.close()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result("connection-lost")


async def handshake_once(loop, host: str, port: int, request: bytes, connect: bytes,
                         timeout: float) -> str | None:
    """Open, connect, close one socket; returns None on success or an error label."""
    done = loop.create_future()
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: HandshakeProtocol(request, connect, done), host, port),
            timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        return type(exc).__name__
    try:
        return await asyncio.wait_for(done, timeout)
    except asyncio.TimeoutError:
        transport.abort()
        return "handshake-timeout"
