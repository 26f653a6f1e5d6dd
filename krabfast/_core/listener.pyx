# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled picows listener: one per socket. Same behaviour as `_listener_py`."""

from picows.picows cimport MemoryBuffer, WSFrame, WSListener, WSMsgType, WSTransport

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

import msgspec

from krabfast._core.sink cimport WireSink
from krabfast.wsutil import echo_close

cdef int OPEN = 1  # krabfast.connection.OPEN


cdef inline bint _valid_utf8(bytes data):
    """RFC 3629 UTF-8 (no surrogates, no overlongs, at most U+10FFFF), ASCII 8 bytes at a time."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t i = 0
    cdef unsigned char c, c1
    cdef uint64_t word
    while i < n:
        if i + 8 <= n:
            memcpy(&word, p + i, 8)
            if (word & 0x8080808080808080ULL) == 0:
                i += 8
                continue
        c = p[i]
        if c < 0x80:
            i += 1
        elif 0xC2 <= c <= 0xDF:
            if i + 1 >= n or (p[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif 0xE0 <= c <= 0xEF:
            if i + 2 >= n:
                return False
            c1 = p[i + 1]
            if (c1 & 0xC0) != 0x80 or (p[i + 2] & 0xC0) != 0x80:
                return False
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F):
                return False  # overlong, or a UTF-16 surrogate
            i += 3
        elif 0xF0 <= c <= 0xF4:
            if i + 3 >= n:
                return False
            c1 = p[i + 1]
            if ((c1 & 0xC0) != 0x80 or (p[i + 2] & 0xC0) != 0x80
                    or (p[i + 3] & 0xC0) != 0x80):
                return False
            if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F):
                return False  # overlong, or past U+10FFFF
            i += 4
        else:
            return False
    return True


cpdef bint valid_utf8(bytes data):
    """Exposed for tests: the same check `deliver` makes."""
    return _valid_utf8(data)


cdef tuple _FRAME_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                            RecursionError)


cdef class FrameListener(WSListener):
    def __init__(self, server, hub, str peer_ip, bint is_local, browser,
                 Py_ssize_t preauth_limit, Py_ssize_t open_limit):
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

    cpdef on_ws_connected(self, WSTransport transport):
        self.server.attach(self, transport)
        transport.request = None  # read-only for Python code, not for us (see listener.pxd)
        transport.response = None
        # Our frames go out through the sink, not picows' send(); its 1 KiB staging buffer
        # only ever carries pings and closes.
        transport._write_buffer = MemoryBuffer(64)

    cpdef on_ws_disconnected(self, WSTransport transport):
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.transport_closed()
        self.server.forget(self)

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef WSMsgType msg_type = frame.msg_type
        cdef WireSink sink = <WireSink?>self.sink
        self.alive = True
        # Everything this read buffer's frames produce leaves in one write (see sink.pxd).
        sink.begin()
        try:
            if frame.rsv1 or frame.rsv2 or frame.rsv3:
                # RFC 6455 5.2: no extension was negotiated, so reserved bits must be 0.
                if self.conn is not None:
                    self.conn.close(1002, "reserved bits set")
            elif msg_type == WSMsgType.TEXT and frame.fin and self.frag is None:
                self.deliver(frame.get_payload_as_bytes(), False)
            elif msg_type == WSMsgType.CLOSE:
                if not sink.closed:
                    sink.mark_closed()
                    echo_close(transport, frame)
                transport.disconnect()
            elif msg_type == WSMsgType.PING:
                transport.send_pong(frame.get_payload_as_bytes())
            elif msg_type != WSMsgType.PONG:  # a pong only proves the peer is alive
                self.fragment(frame)
        finally:
            if frame.last_in_buffer:
                sink.flush()

    cdef deliver(self, bytes data, bint binary):
        conn = self.conn
        if conn is None:
            return
        if not _valid_utf8(data):  # checked once, before anything parses it
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

    cdef fragment(self, WSFrame frame):
        """Reassemble fragmented messages (rare: reference clients send whole frames)."""
        cdef WSMsgType msg_type = frame.msg_type
        conn = self.conn
        if conn is None:
            return
        if msg_type == WSMsgType.CONTINUATION:
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
            self.frag_binary = msg_type == WSMsgType.BINARY
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
