# Contract of listener.py: the per-socket picows listener (frames in, Connection calls out);
# also the declarations Cython compiles listener.py with (this file augments it; plain
# Python ignores it).
# Invariants:
# - Text and binary messages that are not UTF-8 close 1007 before anything parses them;
#   frames with reserved bits set close 1002 (no extension is ever negotiated).
# - Complete text (or binary) messages reach the connection exactly once, in order;
#   fragmented messages are reassembled and capped (pre-connect cap before `connect`,
#   maxPayload after); a data frame interleaved with a fragmented message closes 1002.
# - Once the connection is open, every request goes straight to the hub's dispatcher
#   (the same call as Connection._receive_open, minus the Python frames).
# - No exception from serving a frame reaches picows (which would log a traceback per frame
#   and close 1011): it goes to Connection.frame_failed (an answer, one rate-limited line).
# - A peer CLOSE is answered once (empty if it carried no code) and the socket dropped.
# - Any frame from the peer marks it alive for the adapter's keepalive sweep; pings are
#   answered here (picows' auto-pong would consume them unseen, and then a batch could be
#   left unflushed when a ping is the last frame of a read).
# - The sink batches from the first frame of a read buffer and is flushed at the frame
#   picows marks last_in_buffer, so each read costs at most one write.
# - After the upgrade, the adapter empties the transport's copies of the HTTP request and
#   response (it has read what it needs), and the compiled listener shrinks picows' send
#   staging buffer when the adapter says this picows allows it: together they were a third
#   of an idle socket's memory (krabfast/gateway/picows_adapter.py).
#
# Compiled vs plain Python: the same source, with one intended difference that is never
# visible on the wire: compiled, on_ws_connected replaces WSTransport._write_buffer (a
# private field, which Python cannot set) under `if cython.compiled`, when
# `server.shrink_write_buffer` (picows_adapter.check_write_buffer) allows it.

from picows.picows cimport MemoryBuffer, WSFrame, WSListener, WSTransport

from krabfast._core.dispatch cimport Call
from krabfast._core.sink cimport WireSink

cdef int OPEN
cdef tuple _FRAME_ERRORS
cdef int _TEXT, _BINARY, _CONT, _CLOSE, _PING, _PONG  # picows.WSMsgType values

cpdef bint valid_utf8(bytes data)
cpdef Py_ssize_t built_transport_size()

cdef class FrameListener(WSListener):
    cdef public object server         # attach(listener, transport), forget(listener),
                                      # shrink_write_buffer
    cdef public object hub
    cdef public str peer_ip
    cdef public bint is_local
    cdef public object browser        # (Origin, Host) of the upgrade request, or None
    cdef public object conn           # krabfast.connection.Connection once connected
    cdef public WireSink sink         # set by the adapter's attach(), before any frame
    cdef list frag
    cdef bint frag_binary
    cdef Py_ssize_t frag_size
    cdef Py_ssize_t preauth_limit
    cdef Py_ssize_t open_limit
    cdef public bint alive            # a frame arrived since the last keepalive sweep
    cdef public bint pinged           # the last sweep sent a ping
    cdef Call call                    # the connection's Call once it is open

    cpdef on_ws_connected(self, WSTransport transport)
    cpdef on_ws_disconnected(self, WSTransport transport)
    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame)
    cdef deliver(self, bytes data, bint binary)
    cdef fragment(self, WSFrame frame)
