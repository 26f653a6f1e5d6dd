# Contract of listener.pyx: the per-socket picows listener (frames in, Connection calls out).
# Invariants:
# - Complete text (or binary) messages reach the connection exactly once, in order;
#   fragmented messages are reassembled and capped (pre-connect cap before `connect`,
#   maxPayload after); a data frame interleaved with a fragmented message closes 1002.
# - Once the connection is open, plain requests go straight to the hub's compiled
#   dispatcher (same calls as Connection._receive_open, minus the Python frames).
# - A peer CLOSE is answered once (empty if it carried no code) and the socket dropped.

from picows.picows cimport WSFrame, WSListener, WSTransport

cdef class FrameListener(WSListener):
    cdef public object server         # adapter: attach(listener, transport), forget(listener)
    cdef public object hub
    cdef public str peer_ip
    cdef public bint is_local
    cdef public object browser        # (Origin, Host) of the upgrade request, or None
    cdef public object conn           # krabfast.connection.Connection once connected
    cdef public object sink
    cdef list frag
    cdef bint frag_binary
    cdef Py_ssize_t frag_size
    cdef Py_ssize_t preauth_limit
    cdef Py_ssize_t open_limit

    cdef deliver(self, bytes data, bint binary)
    cdef fragment(self, WSFrame frame)
