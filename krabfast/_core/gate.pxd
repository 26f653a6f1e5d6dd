# Contract of gate.py: the pre-connect gate in front of picows' protocol; also the
# declarations Cython compiles gate.py with (this file augments it; plain Python ignores
# it). Invariants:
# - Every protocol callback is forwarded to `inner` unchanged, in order.
# - Until the connection is open, each read is scanned before picows sees it: the HTTP
#   upgrade request up to its blank line, then every WebSocket frame header; a data or
#   continuation frame announcing more than `limit` bytes gets a 1009 close and the
#   socket stops reading, before picows buffers any of it.
# - While picows parses a read, `parsing()` returns this gate (the listener factory
#   learns the peer from it); at any other time it returns None.
# - Once the connection is open the gate only forwards (nothing is scanned or kept).
# - With an `http` factory: a socket whose first request head is complete (or past 16 KiB)
#   without an Upgrade header goes to a fresh HTTP protocol, fed every byte read so far;
#   picows gets connection_lost(None) having written nothing, and every later callback goes
#   to the HTTP protocol. Without one (or with an Upgrade header) nothing changes.

cimport cython

cdef bytes _HEAD_END
cdef Py_ssize_t _HEAD_MAX
cdef Py_ssize_t _HTTP_HEAD_MAX
cdef bytes _UPGRADE
cdef bytes _CLOSE_TOO_BIG
cdef object _parsing

cdef class _GateBase:
    pass

cdef class PreauthGate(_GateBase):
    cdef public object inner          # picows' protocol
    cdef public long long limit       # the pre-connect frame cap
    cdef public object http           # () -> HTTP protocol, or None
    cdef public object transport
    cdef public object listener       # the FrameListener, once picows asked for it
    cdef object _view
    cdef bytearray _head
    cdef bytearray _hdr
    cdef long long _skip
    cdef bint _refused
    cdef public bint _open
    cdef bytes _handoff
    cdef public bint forwarded        # the upgrade request has a forwarding header

    cpdef get_buffer(self, Py_ssize_t sizehint)
    cpdef buffer_updated(self, Py_ssize_t nbytes)
    @cython.locals(i=Py_ssize_t, n=Py_ssize_t, start=Py_ssize_t, end=Py_ssize_t,
                   take=cython.longlong, need=Py_ssize_t, l7=cython.int, length=cython.longlong,
                   head=bytearray, hdr=bytearray)
    cdef bint _scan(self, bytes data) except -1
    cdef _refuse(self)
    cdef _to_http(self)

cpdef bint _is_upgrade(bytearray lowered, Py_ssize_t end)
cpdef bint _has_forwarding(bytearray lowered, Py_ssize_t end)
