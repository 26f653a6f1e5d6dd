# Contract of listener.py: the per-socket picows listener (frames in, Connection calls out);
# also the declarations Cython compiles listener.py with (this file augments it; plain
# Python ignores it).
# Invariants:
# - Text and binary messages that are not UTF-8 close 1007 before anything parses them;
#   frames with reserved bits set close 1002 (no extension is ever negotiated).
# - Complete text (or binary) messages reach the connection exactly once, in order;
#   fragmented messages are reassembled and capped (pre-connect cap before `connect`,
#   maxPayload after); a data frame interleaved with a fragmented message closes 1002.
# - Once the connection is open, plain requests go straight to the hub's compiled
#   dispatcher (same calls as Connection._receive_open, minus the Python frames).
# - No exception from serving a frame reaches picows (which would log a traceback per frame
#   and close 1011): it goes to Connection.frame_failed (an answer, one rate-limited line).
# - A peer CLOSE is answered once (empty if it carried no code) and the socket dropped.
# - Any frame from the peer marks it alive for the adapter's keepalive sweep; pings are
#   answered here (picows' auto-pong would consume them unseen, and then a batch could be
#   left unflushed when a ping is the last frame of a read).
# - The sink batches from the first frame of a read buffer and is flushed at the frame
#   picows marks last_in_buffer, so each read costs at most one write.
# - After the upgrade, the transport's copies of the HTTP request/response are released
#   (the adapter has read what it needs) and its send staging buffer shrunk: together they
#   were a third of an idle socket's memory.
#
# Compiled vs plain Python: the same source, with one intended difference. Compiled,
# on_ws_connected writes WSTransport fields that are read-only from Python (`request`,
# `response`, `_write_buffer`) under `if cython.compiled:`; plain Python skips those writes
# and only empties the request's and response's headers (and the response body).


from picows.picows cimport MemoryBuffer, WSFrame, WSListener, WSTransport

from krabfast._core.sink cimport WireSink

cdef int OPEN
cdef tuple _FRAME_ERRORS
cdef int _TEXT, _BINARY, _CONT, _CLOSE, _PING, _PONG  # picows.WSMsgType values

cpdef bint valid_utf8(bytes data)

cdef class FrameListener(WSListener):
    cdef public object server         # adapter: attach(listener, transport), forget(listener)
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

    cpdef on_ws_connected(self, WSTransport transport)
    cpdef on_ws_disconnected(self, WSTransport transport)
    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame)
    cdef deliver(self, bytes data, bint binary)
    cdef fragment(self, WSFrame frame)
