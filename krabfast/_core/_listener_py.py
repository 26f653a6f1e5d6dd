"""Pure-Python twin of `listener.pyx`: the per-socket picows listener (see listener.pxd)."""

from __future__ import annotations

import msgspec
from picows import WSListener, WSMsgType

from krabfast.wsutil import echo_close

OPEN = 1  # krabfast.connection.OPEN
_FRAME_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)
_TEXT, _CLOSE, _PING, _PONG = WSMsgType.TEXT, WSMsgType.CLOSE, WSMsgType.PING, WSMsgType.PONG
_CONT, _BINARY = WSMsgType.CONTINUATION, WSMsgType.BINARY


def valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class FrameListener(WSListener):
    __slots__ = ("server", "hub", "peer_ip", "is_local", "browser", "conn", "sink", "frag",
                 "frag_binary", "frag_size", "preauth_limit", "open_limit", "alive", "pinged")

    def __init__(self, server, hub, peer_ip: str, is_local: bool, browser,
                 preauth_limit: int, open_limit: int) -> None:
        super().__init__()
        self.server = server
        self.hub = hub
        self.peer_ip = peer_ip
        self.is_local = is_local
        self.browser = browser
        self.conn = None
        self.sink = None
        self.frag: list[bytes] | None = None
        self.frag_binary = False
        self.frag_size = 0
        self.preauth_limit = preauth_limit
        self.open_limit = open_limit
        self.alive = True
        self.pinged = False

    def on_ws_connected(self, transport) -> None:
        self.server.attach(self, transport)

    def on_ws_disconnected(self, transport) -> None:
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.transport_closed()
        self.server.forget(self)

    def on_ws_frame(self, transport, frame) -> None:
        msg_type = frame.msg_type
        sink = self.sink
        self.alive = True
        # Everything this read buffer's frames produce leaves in one write (see sink.pxd).
        sink.begin()
        try:
            if frame.rsv1 or frame.rsv2 or frame.rsv3:
                # RFC 6455 5.2: no extension was negotiated, so reserved bits must be 0.
                if self.conn is not None:
                    self.conn.close(1002, "reserved bits set")
            elif msg_type is _TEXT and frame.fin and self.frag is None:
                self.deliver(frame.get_payload_as_bytes(), False)
            elif msg_type is _CLOSE:
                if not sink.closed:
                    sink.mark_closed()
                    echo_close(transport, frame)
                transport.disconnect()
            elif msg_type is _PING:
                transport.send_pong(frame.get_payload_as_bytes())
            elif msg_type is not _PONG:  # a pong only proves the peer is alive
                self.fragment(frame)
        finally:
            if frame.last_in_buffer:
                sink.flush()

    def deliver(self, data: bytes, binary: bool) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            data.decode("utf-8")  # checked once, before anything parses it
        except UnicodeDecodeError:
            conn.close(1007, "invalid UTF-8")
            return
        if conn.state != OPEN:
            conn.receive_text(data, binary)
            return
        try:
            rest = self.hub.dispatcher.receive(conn, data)
        except _FRAME_ERRORS as exc:
            conn.frame_failed(data, exc)
            return
        if rest is not None:
            conn.dispatch_rest(rest)

    def fragment(self, frame) -> None:
        """Reassemble fragmented messages (rare: reference clients send whole frames)."""
        msg_type = frame.msg_type
        conn = self.conn
        if conn is None:
            return
        if msg_type is _CONT:
            if self.frag is None:
                conn.close(1002, "unexpected continuation frame")
                return
        elif self.frag is not None:
            # RFC 6455 5.4: a new data frame may not interleave with a fragmented message.
            self.frag = None
            conn.close(1002, "expected a continuation frame")
            return
        else:
            self.frag = []
            self.frag_size = 0
            self.frag_binary = msg_type is _BINARY
        chunk = frame.get_payload_as_bytes()
        self.frag.append(chunk)
        self.frag_size += len(chunk)
        if self.frag_size > (self.open_limit if conn.state == OPEN else self.preauth_limit):
            self.frag = None
            conn.close(1009, "message too large")
            return
        if frame.fin:
            data = b"".join(self.frag)
            self.frag = None
            self.deliver(data, self.frag_binary)
