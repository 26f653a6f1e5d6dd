"""HTTP/1.1 on the gateway port: the protocol a socket switches to when its first request is
not a WebSocket upgrade (the pre-connect gate decides, krabfast/_core/gate.py).

httptools parses (keep-alive, pipelining, chunked bodies); answers come from `app(request)`,
a synchronous callable returning a Response. Limits, as the reference (Node's defaults,
docs/reference/web-facts.md): 16 KiB of request head (431), a header timeout that bounds
slow senders (slowloris), 5 s keep-alive idle; plus a body cap (413) since no route takes
a large body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from http import HTTPStatus
from urllib.parse import unquote

import httptools

from krabfast.web.request import Request, Response

log = logging.getLogger("krabfast.http")

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
HEADER_TIMEOUT_S = 10.0     # from a request's first byte to its last header
KEEPALIVE_TIMEOUT_S = 5.0   # idle between requests (the reference's `Keep-Alive: timeout=5`)
_READ_CHUNK = 64 * 1024

_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %b\r\n" % (status, phrase.encode())
    return line


def _http_date(ts: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ts))


class HttpProtocol(asyncio.BufferedProtocol):
    """One HTTP connection. `attribute(peer_ip, headers, path) -> (client_ip, is_local) |
    Response` says who the request is from (trusted proxies) or refuses it outright."""

    def __init__(self, app, attribute, *, tls: bool = False,
                 header_timeout: float = HEADER_TIMEOUT_S,
                 keepalive_timeout: float = KEEPALIVE_TIMEOUT_S) -> None:
        self.app = app
        self.attribute = attribute
        self.tls = tls
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.transport = None
        self.loop = None
        self.peer_ip = ""
        self._buf = bytearray(_READ_CHUNK)
        self._view = memoryview(self._buf)
        self._parser = httptools.HttpRequestParser(self)
        self._timer = None
        self._closing = False
        self._paused = False
        self._reset()

    def _reset(self) -> None:
        self._url = bytearray()
        self._headers: dict[str, str] = {}
        self._name = None
        self._head_bytes = 0
        self._body = bytearray()
        self._in_message = False
        self._headers_done = False

    # -- asyncio -------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, (tuple, list)) and peer else ""
        self._arm(self.header_timeout)  # the first request's head must come in time

    def feed(self, data: bytes) -> None:
        """Bytes read before this protocol took over the socket (the gate's copy)."""
        self._feed(data)

    def get_buffer(self, sizehint: int):
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self._feed(self._view[:nbytes])

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc) -> None:
        self._closing = True
        self._disarm()

    def pause_writing(self) -> None:
        # A slow reader of a large answer: stop reading (and so answering) until it drains.
        self._paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()

    # -- timers --------------------------------------------------------------------------------
    def _arm(self, delay: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._in_message and not self._headers_done:
            self._fail(408)  # a head that trickles in: answered once, then closed
        else:
            self.close()

    # -- parsing -------------------------------------------------------------------------------
    def _feed(self, data) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An upgrade inside a keep-alive HTTP connection: WebSockets start on a fresh one.
            self._fail(400)
        except httptools.HttpParserCallbackError as exc:
            # A callback refused the request (httptools wraps what they raise).
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._fail(cause.status)
            else:
                log.error("HTTP request handling failed", exc_info=cause or exc)
                self._fail(500)
        except httptools.HttpParserError:
            self._fail(400)

    def on_message_begin(self) -> None:
        self._in_message = True
        self._arm(self.header_timeout)  # this request's head must come in time

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD:
            raise _Refused(431 if self._url else 414)
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD:
            raise _Refused(431)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in self._headers:
            self._headers[key] += ", " + text
        else:
            self._headers[key] = text

    def on_headers_complete(self) -> None:
        if "upgrade" in self._headers:
            # An upgrade inside a keep-alive HTTP connection (WebSockets start on a fresh
            # one), or to something else: as the reference, 400.
            raise _Refused(400)
        self._headers_done = True
        self._disarm()  # the body (if any) is bounded by MAX_BODY, not by time
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            raise _Refused(413)

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > MAX_BODY:
            raise _Refused(413)
        self._body += body

    def on_message_complete(self) -> None:
        parser = self._parser
        keep_alive = parser.should_keep_alive()
        method = parser.get_method().decode("ascii", "replace")
        try:
            url = httptools.parse_url(bytes(self._url))
        except httptools.HttpParserInvalidURLError:
            self._reset()
            raise _Refused(400) from None
        path = unquote((url.path or b"/").decode("latin-1"), errors="replace")
        query = (url.query or b"").decode("latin-1")
        headers = self._headers
        body = bytes(self._body)
        self._reset()
        attributed = self.attribute(self.peer_ip, headers, path)
        if isinstance(attributed, Response):
            response = attributed
        else:
            peer_ip, is_local = attributed
            request = Request(method, path if path.startswith("/") else "/" + path, query,
                              headers, body, peer_ip, is_local, self.tls)
            try:
                response = self.app(request)
            except Exception:  # noqa: BLE001 (a route bug: a clean 500, the socket lives on)
                log.exception("HTTP route failed: %s %s", method, path)
                response = Response.text(500, headers=[("Cache-Control", "no-store")])
        self._write(response, head_only=method == "HEAD", keep_alive=keep_alive)
        if not keep_alive:
            self.close()
        elif not self._closing:
            self._arm(self.keepalive_timeout)

    # -- answers -------------------------------------------------------------------------------
    def _write(self, response: Response, *, head_only: bool, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or self._closing:
            return
        parts = [_status_line(response.status)]
        if response.content_type is not None:
            parts.append(b"Content-Type: %b\r\n" % response.content_type.encode("latin-1"))
        for name, value in response.headers:
            parts.append(b"%b: %b\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        body = response.body
        if response.status != 304 and response.status >= 200:
            parts.append(b"Content-Length: %d\r\n" % len(body))
        parts.append(b"Date: %b\r\n" % _http_date(time.time()).encode())
        if keep_alive:
            parts.append(b"Connection: keep-alive\r\nKeep-Alive: timeout=%d\r\n"
                         % int(self.keepalive_timeout))
        else:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        if not head_only and response.status != 304:
            parts.append(body)
        transport.write(b"".join(parts))

    def _fail(self, status: int) -> None:
        """Answer a request we will not serve (bad, too large, too slow) and close."""
        if self._closing:
            return
        self._write(Response.text(status), head_only=False, keep_alive=False)
        self.close()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()  # after what is queued is written


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status
