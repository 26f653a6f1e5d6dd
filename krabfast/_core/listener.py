"""The per-socket picows listener: frames in, Connection calls out (see listener.pxd for the
contract). One source: compiled with listener.pxd (a cdef subclass of picows' WSListener),
or plain Python with KRABFAST_NO_EXTENSIONS=1."""

try:
    import cython
except ImportError:  # plain Python without Cython installed: only `compiled` is read
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

import msgspec
from picows.picows import WSListener, WSMsgType  # compiled: cimported (listener.pxd)

from krabfast.wsutil import echo_close

OPEN = 1  # krabfast.connection.OPEN
_FRAME_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                 RecursionError)
# Message types (compiled: C ints, compared with the frame's C enum).
_TEXT, _BINARY, _CONT = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION
_CLOSE, _PING, _PONG = WSMsgType.CLOSE, WSMsgType.PING, WSMsgType.PONG


def valid_utf8(data):
    """RFC 3629 UTF-8 (no surrogates, no overlongs, at most U+10FFFF): the check `deliver`
    makes. Python's strict decoder is C code (with an ASCII fast path); compiled, the call
    goes straight to PyUnicode_DecodeUTF8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def built_transport_size():
    """Compiled: the size of picows' WSTransport struct this module was compiled against
    (its layout is baked in; picows_adapter compares it with the running picows'). 0 in
    plain Python."""
    return cython.sizeof(WSTransport) if cython.compiled else 0  # noqa: F821 (cimported)


class FrameListener(WSListener):
    __slots__ = ("server", "hub", "peer_ip", "is_local", "browser", "conn", "sink", "frag",
                 "frag_binary", "frag_size", "preauth_limit", "open_limit", "alive", "pinged",
                 "call")

    def __init__(self, server, hub, peer_ip, is_local, browser, preauth_limit, open_limit):
        self.server = server
        self.hub = hub
        self.peer_ip = peer_ip
        self.is_local = is_local
        self.browser = browser
        self.conn = None
        self.sink = None
        self.frag = None
        self.frag_binary = False
        self.frag_size = 0
        self.preauth_limit = preauth_limit
        self.open_limit = open_limit
        self.alive = True
        self.pinged = False
        self.call = None  # the connection's Call once it is open (what dispatch reads)

    def on_ws_connected(self, transport):
        self.server.attach(self, transport)  # which also releases the upgrade request/response
        if cython.compiled and self.server.shrink_write_buffer:
            # The one write past picows' public API (a private field; only compiled code can
            # set it): our frames go out through the sink, not picows' send(), so its 1 KiB
            # staging buffer only ever carries pings, pongs and closes. When and why it is
            # safe: krabfast/gateway/picows_adapter.py (3.).
            transport._write_buffer = MemoryBuffer(64)  # noqa: F821 (cimported)

    def on_ws_disconnected(self, transport):
        conn = self.conn
        self.call = None
        if conn is not None:
            self.conn = None
            conn.transport_closed()
        self.server.forget(self)

    def on_ws_frame(self, transport, frame):
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
            elif msg_type == _TEXT and frame.fin and self.frag is None:
                self.deliver(frame.get_payload_as_bytes(), False)
            elif msg_type == _CLOSE:
                if not sink.closed:
                    sink.mark_closed()
                    echo_close(transport, frame)
                transport.disconnect()
            elif msg_type == _PING:
                transport.send_pong(frame.get_payload_as_bytes())
            elif msg_type != _PONG:  # a pong only proves the peer is alive
                self.fragment(frame)
        finally:
            if frame.last_in_buffer:
                sink.flush()

    def deliver(self, data, binary):
        conn = self.conn
        if conn is None:
            return
        if not valid_utf8(data):  # checked once, before anything parses it
            conn.close(1007, "invalid UTF-8")
            return
        try:
            call = self.call
            if call is None:
                if conn.state != OPEN:
                    conn.receive_text(data, binary)
                    return
                self.call = call = conn.call
            if self.sink.closed:
                return  # closed by the gateway: nothing more is served
            try:
                self.hub.dispatcher.receive(call, data)
            except _FRAME_ERRORS as exc:
                conn.frame_failed(data, exc)
        except Exception as exc:
            # A bug while serving this frame: a clean answer (or 1011) and one rate-limited
            # log line, never a traceback per frame from picows.
            conn.frame_failed(data, exc)

    def fragment(self, frame):
        """Reassemble fragmented messages (rare: reference clients send whole frames)."""
        msg_type = frame.msg_type
        conn = self.conn
        if conn is None:
            return
        if msg_type == _CONT:
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
            self.frag_binary = msg_type == _BINARY
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
